"""The README's "Receiving integration events" examples, run as written on the local Cosmos DB."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import DatabaseProxy, PartitionKey

from events.core.consumer import Outcome
from events.core.envelope import IntegrationEvent

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "README.md"


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Receiving integration events", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _event() -> IntegrationEvent:
    return IntegrationEvent(
        id="evt-readme",
        source="/integration-relay/payments",
        type="PaymentCaptured",
        subject="acct-1",
        time=datetime(2026, 12, 1, tzinfo=UTC),
        data={"amount": 5},
        partitionkey="acct-1",
    )


def test_readme_receiving_examples_run_and_commit_once(cosmos_database: DatabaseProxy) -> None:
    transactional, idempotent = _examples()
    container = cosmos_database.create_container(
        id="ledger", partition_key=PartitionKey(path="/partitionKey"), default_ttl=-1
    )
    inbox_container = cosmos_database.create_container(
        id="inbox", partition_key=PartitionKey(path="/consumer"), default_ttl=1_209_600
    )
    sent: list[str] = []
    namespace: dict[str, Any] = {
        "container": container,
        "inbox_container": inbox_container,
        "event": _event(),
        "send_receipt": lambda event: sent.append(event.id),
    }

    exec(transactional, namespace)
    assert namespace["outcome"] == Outcome(handled=True, duplicate=False, late=False, gap=False)
    assert namespace["consumer"].handle(_event()).duplicate
    exec(idempotent, namespace)
    assert namespace["consumer"].handle(_event()).duplicate

    assert container.read_item("balance", partition_key="acct-1")["total"] == 5
    assert sent == ["evt-readme"]
