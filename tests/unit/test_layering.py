"""The layering is enforced by import-linter (``make lint``), and the Functions package ships
the declaration the app reads at start-up."""

from __future__ import annotations

import ast
import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "events", tmp_path / "events", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)},
        timeout=300,
    )


def test_layering_contracts_hold_on_the_package() -> None:
    result = _lint_imports(ROOT)

    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("core/relay.py", "import azure.cosmos", "import no Azure SDK"),
        ("core/relay.py", "import events.deployment.settings", "Layers"),
        ("changefeed/processor.py", "import events.errors", "its own ports only"),
        ("changefeed/feed.py", "import events.adapters.cosmos.changefeed", "Layers"),
        ("adapters/servicebus.py", "import events.deployment.settings", "Layers"),
        ("hosts/runtime.py", "import azure.servicebus", "through adapters"),
        ("deployment/catalog.py", "import devstack.cosmos", "never imports the dev stack"),
    ],
)
def test_layering_deliberate_bad_import_fails_lint_naming_the_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    copy = _copy_package(tmp_path)
    (copy / "devstack").mkdir()
    (copy / "devstack" / "__init__.py").write_text("")
    (copy / "devstack" / "cosmos.py").write_text("")
    target = copy / "events" / module
    target.write_text(f"{bad_import}  # deliberate violation\n" + target.read_text())

    result = _lint_imports(copy)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken
    assert module.removesuffix(".py").replace("/", ".") in broken


def _ignored(path: str, patterns: list[str]) -> bool:
    """.funcignore semantics for the patterns it uses (gitignore: last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!")
        directory = body.endswith("/")
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = prefixes[:-1] if directory else prefixes
        if any(fnmatch.fnmatchcase(p, body) for p in candidates) or (
            "/" not in body and any(fnmatch.fnmatchcase(part, body) for part in parts)
        ):
            ignored = not negate
    return ignored


def test_functions_package_ships_the_declaration_and_the_package_only() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    shipped = {
        p: not _ignored(p, patterns)
        for p in (
            "infra/topology.json",
            "infra/main.bicep",
            "function_app.py",
            "host.json",
            "events/core/relay.py",
            "events/deployment/contracts/orders.py",
            "devstack/cosmos.py",
            "tests/factories.py",
            "docs/decisions.md",
            "tools/asyncapi/package.json",
        )
    }

    assert shipped == {
        "infra/topology.json": True,
        "infra/main.bicep": False,
        "function_app.py": True,
        "host.json": True,
        "events/core/relay.py": True,
        "events/deployment/contracts/orders.py": True,
        "devstack/cosmos.py": False,
        "tests/factories.py": False,
        "docs/decisions.md": False,
        "tools/asyncapi/package.json": False,
    }


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:``: annotations only, no import at run time (the
    import-linter configuration excludes them too)."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                guarded.update(ast.walk(child))
    return guarded


def _sdk_importers(sdk: str) -> set[str]:
    """Modules of the package importing ``sdk`` at run time (any form, any depth)."""
    found = set()
    for path in (ROOT / "events").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_only = _type_only(tree)
        for node in ast.walk(tree):
            if node in type_only:
                continue
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == sdk or name.startswith(f"{sdk}.") for name in names):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_layering_each_sdk_is_imported_by_its_adapters_only() -> None:
    # import-linter cannot forbid sub-packages of external packages: checked here instead.
    # Sending in one adapter, receiving (sessions, settlement) in the other.
    assert _sdk_importers("azure.servicebus") == {
        "events/adapters/servicebus.py",
        "events/adapters/receiving.py",
    }
    assert {p.rsplit("/", 1)[0] for p in _sdk_importers("azure.cosmos")} == {
        "events/adapters/cosmos"
    }
    assert _sdk_importers("azure.functions") == {"events/hosts/functions.py"}
