"""Every Bicep file parses with tree-sitter-bicep (no Bicep CLI here), and avoids what checkov's
parser (pycep 0.5.1) cannot read, since an unreadable file there is silently checked by nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, bicep_files, syntax_problems

pytestmark = pytest.mark.infra

_FILES = bicep_files()


def test_infra_bicep_files_exist_main_and_modules() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in _FILES}
    assert "main.bicep" in names
    assert {
        "modules/identity.bicep",
        "modules/monitoring.bicep",
        "modules/storage.bicep",
        "modules/cosmos.bicep",
        "modules/servicebus.bicep",
        "modules/functionapp.bicep",
        "modules/alerts.bicep",
        "modules/network.bicep",
    } <= names


@pytest.mark.parametrize("path", _FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parsed_has_no_error_or_missing_nodes(path: Path) -> None:
    assert syntax_problems(path.read_bytes()) == []


def test_bicep_syntax_check_broken_snippet_reports_problems() -> None:
    broken = b"resource sb 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {\n  name: \n"
    assert syntax_problems(broken) != []


# Constructs pycep 0.5.1 cannot parse (infra facts); checkov would then check nothing in the file.
_PYCEP_UNSUPPORTED = {
    "typed array": re.compile(r"\b(string|int|bool|object)\[\]"),
    "import": re.compile(r"^\s*import\b", re.MULTILINE),
    "@export": re.compile(r"@export\("),
    "func": re.compile(r"^\s*func\s", re.MULTILINE),
    "nullable type": re.compile(r"\b(string|int|bool|object)\?"),
    "spread": re.compile(r"\.\.\.\w"),
    "lambda": re.compile(r"=>"),
    "loop variable named items": re.compile(r"\bfor\s+\(?\s*items\b"),
    "br/public module": re.compile(r"'br[:/]"),
    "property named filter": re.compile(r"\.filter\b"),
}


@pytest.mark.parametrize("path", _FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_uses_only_constructs_checkov_can_parse(path: Path) -> None:
    code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
    found = [name for name, pattern in _PYCEP_UNSUPPORTED.items() if pattern.search(code)]
    assert found == []


def test_infra_has_no_bicepparam_files() -> None:
    assert list(INFRA.rglob("*.bicepparam")) == []
