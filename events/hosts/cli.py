"""Command line: ``python -m events <command>``.

    run                 the relay as a long-running change-feed processor (same settings as
                        the Function app)
    consume             run the declared consumers (serviceBus.consumers) with session
                        receivers, as the Functions app's Service Bus triggers do
    provision           create the database and containers of the declaration (idempotent)
    check [--offline]   validate the deployment against every rule, one line per rule
    dev [cosmos|servicebus] [...]
                        the local dev stack: with no sub-command, the whole flow on one
                        machine (servers, relay, demo writer and consumer)
    schemas [--check] [--out DIR]
                        export the event contracts' JSON Schemas and the AsyncAPI 3.0
                        document (asyncapi.json) to schemas/
    quarantine list|redrive [--feed F] [--aggregate KEY] [ID ...]
                        show quarantined documents; relay them again once fixed
    lag [--feed F] [--watch [SECONDS]]
                        per feed and lease: changes pending and how long the oldest waited
    replay --feed F --since TIME [--until TIME] [--dry-run] [--force]
                        relay a window of a container's changes again (new leases)

``python -m events --help`` prints this; ``python -m events <command> --help`` the options of
one command. An unknown command exits with status 2.

``dev`` lives in the repository's ``devstack`` package, which the Functions deployment does
not ship; it is imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from events.deployment.asyncapi import ASYNCAPI_FILE_NAME, asyncapi_text
from events.deployment.catalog import load_deployment
from events.errors import SettingsError

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
PROJECT_FILE = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _project_version() -> str:
    """The project's version (``pyproject.toml``), the published document's info version."""
    try:
        project = tomllib.loads((PROJECT_FILE).read_text(encoding="utf-8"))["project"]
        return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0.0.0"


def _schema_files(declaration: Path | None) -> dict[str, str]:
    """File name -> text: each contract's JSON Schema and the AsyncAPI document."""
    deployment = load_deployment(declaration)
    files = deployment.contracts.schemas()
    files[ASYNCAPI_FILE_NAME] = asyncapi_text(deployment, version=_project_version())
    return files


def _schemas(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events schemas",
        description="Write each contract's JSON Schema and the AsyncAPI 3.0 document "
        f"({ASYNCAPI_FILE_NAME}) of the declaration's destinations and messages.",
    )
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    parser.add_argument(
        "--out", type=Path, default=SCHEMAS_DIR, metavar="DIR", help="default: schemas/"
    )
    parser.add_argument(
        "--declaration",
        type=Path,
        default=None,
        metavar="PATH",
        help="the declaration to describe (default: infra/topology.json)",
    )
    args = parser.parse_args(argv)
    try:
        files = _schema_files(args.declaration)
    except (SettingsError, ValueError) as exc:
        print(f"python -m events schemas: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (args.out / name).is_file()
            or (args.out / name).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"out of date: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (args.out / name).write_text(text, encoding="utf-8")
            print(args.out / name)
    except OSError as exc:
        print(
            f"python -m events schemas: cannot write to {args.out}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


def _entry(module: str, function: str) -> Callable[[list[str]], int]:
    def call(argv: list[str]) -> int:
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            print(
                f"{module} is not available ({exc.name} missing): the dev stack runs from a "
                "clone of the repository after `make setup`",
                file=sys.stderr,
            )
            return 2
        entry: Callable[[list[str]], int] = getattr(loaded, function)
        return entry(argv)

    return call


def _dev(argv: list[str]) -> int:
    targets = {
        "cosmos": _entry("devstack.cosmos", "main"),
        "servicebus": _entry("devstack.servicebus.cli", "main"),
    }
    if argv and argv[0] in targets:
        return targets[argv[0]](argv[1:])
    return _entry("devstack.demo", "main")(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _entry("events.hosts.processor", "run_main"),
    "consume": _entry("events.hosts.consume", "main"),
    "dev": _dev,
    "schemas": _schemas,
    "quarantine": _entry("events.hosts.redrive", "main"),
    "provision": _entry("events.hosts.provision", "main"),
    "check": _entry("events.hosts.check", "main"),
    "lag": _entry("events.hosts.lag", "main"),
    "replay": _entry("events.hosts.replay", "main"),
}

_HELP = ("-h", "--help", "help")


def main(argv: list[str]) -> int:
    if argv and argv[0] in _HELP:
        if len(argv) > 1 and argv[1] in COMMANDS:  # ``help run`` is ``run --help``
            return COMMANDS[argv[1]](["--help"])
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"python -m events: unknown command {argv[0]!r}", file=sys.stderr)
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
