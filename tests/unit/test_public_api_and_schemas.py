"""The package's public surface, and the committed JSON Schemas of the event contracts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import events
from events.deployment.asyncapi import ASYNCAPI_FILE_NAME, asyncapi_text
from events.deployment.catalog import load_deployment
from events.deployment.contracts import default_registry
from events.hosts.cli import SCHEMAS_DIR, _project_version

ROOT = Path(__file__).resolve().parents[2]


def test_public_api_is_exactly_what_all_names() -> None:
    public = {name for name in dir(events) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(events, name)).__name__ == "module"}

    assert sorted(events.__all__) == sorted(public - modules)
    assert len(events.__all__) == len(set(events.__all__))


def test_public_api_names_both_consumer_modes_their_stores_and_errors() -> None:
    receiving = {
        "TransactionalConsumer",
        "TransactionalInbox",
        "UnitOfWork",
        "InMemoryTransactionalInbox",
        "CosmosTransactionalInbox",
        "IdempotentConsumer",
        "Inbox",
        "InMemoryInbox",
        "CosmosInbox",
        "Outcome",
        "OrderPolicy",
        "GapReport",
        "InboxError",
        "DuplicateEventError",
        "PayloadMismatchError",
        "EventInProgressError",
        "InboxConflictError",
        "InboxTooManyOperationsError",
        "InboxTooLargeError",
    }

    assert receiving - set(events.__all__) == set()
    assert events.CosmosTransactionalInbox.__module__ == "events.adapters.cosmos.inbox"


def test_public_api_import_loads_no_azure_sdk_until_an_adapter_is_used() -> None:
    probe = (
        "import sys, events; before = sorted(m for m in sys.modules if m.startswith('azure')); "
        "events.OutboxWriter; after = any(m.startswith('azure.cosmos') for m in sys.modules); "
        "print(before, after)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[] True"


def test_schemas_committed_files_equal_the_contracts_and_the_declaration() -> None:
    expected = default_registry().schemas()
    expected[ASYNCAPI_FILE_NAME] = asyncapi_text(load_deployment(), version=_project_version())
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS_DIR.glob("*.json")}

    assert committed == expected


def test_schemas_declare_id_and_camel_case_fields_only() -> None:
    for text in default_registry().schemas().values():
        schema = json.loads(text)
        assert schema["$id"].startswith("https://")
        assert all("_" not in name for name in schema["properties"])


def test_schemas_check_command_reports_a_stale_file(tmp_path: Path) -> None:
    for name, text in default_registry().schemas().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "OrderPlaced.v1.schema.json").write_text("{}", encoding="utf-8")

    stale = subprocess.run(
        [sys.executable, "-m", "events", "schemas", "--check", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert stale.returncode == 1
    assert "OrderPlaced.v1.schema.json" in stale.stderr


def test_cli_unknown_command_prints_usage_and_fails() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "events", "frobnicate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "python -m events" in result.stderr
