"""A quarantined change parks its aggregate across batches, end to end: real azure-cosmos and
azure-servicebus SDKs, the local servers, the relay process (``python -m events run``) and
the re-drive command (``python -m events quarantine redrive --aggregate``).

A bad outbox document, then (in a separate write, after the relay handled the first) a valid
event of the same aggregate: the valid one is parked, nothing of the aggregate is published.
After the bad document is fixed in its record and the aggregate re-driven, both arrive in
change order, and the aggregate's next change is published again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.cosmos import ContainerProxy
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from devstack.demo import Relay, local_stack, relay_environment
from events.deployment.topology import load_topology
from tests import factories

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
AGGREGATE = "order-parked"
CONTROL = "order-control"
WAIT = 60.0
T = TypeVar("T")


def _as_written(document: dict[str, Any]) -> dict[str, Any]:
    """A factory document without the system fields: what an application writes."""
    return {k: v for k, v in document.items() if not k.startswith("_")}


def _wait_for(what: str, probe: Callable[[], T | None], relay_log: Path) -> T:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    tail = relay_log.read_text(encoding="utf-8")[-3000:] if relay_log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; relay log tail:\n{tail}")


def _records(quarantine: ContainerProxy, document_id: str) -> list[dict[str, Any]]:
    return list(
        quarantine.query_items(
            "SELECT * FROM c WHERE c.documentId = @id",
            parameters=[{"name": "@id", "value": document_id}],
            enable_cross_partition_query=True,
        )
    )


def _receive(
    client: ServiceBusClient, session: str, seconds: float
) -> list[ServiceBusReceivedMessage]:
    """Every message of the session on the `all` subscription within ``seconds``, completed."""
    received: list[ServiceBusReceivedMessage] = []
    with client.get_subscription_receiver(
        "integration-events", "all", session_id=session, max_wait_time=seconds
    ) as receiver:
        for message in receiver:
            received.append(message)
            receiver.complete_message(message)
    return received


def _redrive(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "events",
            "quarantine",
            "redrive",
            "--aggregate",
            AGGREGATE,
            "--insecure-local",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_parked_aggregate_later_valid_change_held_until_redrive_then_in_change_order(
    tmp_path: Path,
) -> None:
    topology = load_topology()
    log = tmp_path / "relay.log"
    with local_stack(topology, tmp_path) as (cosmos, bus):
        env = relay_environment(cosmos, bus)
        database = cosmos.client().get_database_client(topology.cosmos.database)
        orders = database.get_container_client("orders")
        quarantine = database.get_container_client("quarantine")
        relay = Relay(env, log)
        relay.start()
        try:
            bad = _as_written(factories.placed(AGGREGATE, "e-1"))
            bad["data"]["totalCents"] = "4200"  # a string: the contract refuses it
            orders.create_item(bad)
            _wait_for("the bad document quarantined", lambda: _records(quarantine, "e-1"), log)

            orders.create_item(_as_written(factories.shipped(AGGREGATE, "e-2")))
            orders.create_item(_as_written(factories.placed(CONTROL, "e-9")))
            [parked] = _wait_for(
                "the later change parked", lambda: _records(quarantine, "e-2"), log
            )
            assert parked["reason"] == "blocked-behind-quarantined-change"

            with ServiceBusClient.from_connection_string(bus.connection_string) as client:
                control = _receive(client, CONTROL, 5)
                held = _receive(client, AGGREGATE, 3)

                [record] = _records(quarantine, "e-1")
                record["document"]["data"]["totalCents"] = 4200  # the operator's fix
                quarantine.upsert_item(record)
                redriven = _redrive(env)
                released = _receive(client, AGGREGATE, 5)

                orders.create_item(_as_written(factories.shipped(AGGREGATE, "e-3")))
                after = _wait_for(
                    "the next change of the released aggregate",
                    lambda: _receive(client, AGGREGATE, 2),
                    log,
                )
        finally:
            relay.stop()

    assert [str(m.message_id) for m in control] == [factories.outbox_id(CONTROL, "e-9")]
    assert held == []
    assert redriven.returncode == 0, redriven.stdout + redriven.stderr
    assert f"aggregate={AGGREGATE} feed=relay_orders released" in redriven.stdout
    assert [str(m.message_id) for m in released] == [
        factories.outbox_id(AGGREGATE, "e-1"),
        factories.outbox_id(AGGREGATE, "e-2"),
    ]
    assert [m.subject for m in released] == ["OrderPlaced", "OrderShipped"]
    assert [str(m.message_id) for m in after] == [factories.outbox_id(AGGREGATE, "e-3")]
