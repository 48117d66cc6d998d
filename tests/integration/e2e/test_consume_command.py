"""The declared consumer run locally: orders written with the real azure-cosmos SDK are relayed
by ``python -m events run`` to the local broker, received by ``python -m events consume`` on
the session subscription ``integration-events/order-status`` (real azure-servicebus
receivers) and projected into the ``order-status`` container. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, DatabaseProxy

from devstack.demo import Relay, local_stack, relay_environment
from events import OutboxEvent, OutboxWriter
from events.core.inbox import INBOX_KIND
from events.deployment.contracts import OrderPlacedV1
from events.deployment.topology import load_topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
#: How long the events may take from the write to the projection (relay poll, sessions).
ARRIVAL_SECONDS = 90.0
ORDERS = ("o-1", "o-2", "o-3")


def _order(order_id: str, status: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "partitionKey": order_id,
        "type": "Order",
        "status": status,
        "customerId": "c-1",
        "totalCents": 100,
        "currency": "EUR",
        "customerEmail": "someone@example.com",
    }


@pytest.fixture
def database(tmp_path: Path) -> Iterator[DatabaseProxy]:
    topology = load_topology()
    with local_stack(topology, tmp_path) as (cosmos, bus):
        env = relay_environment(cosmos, bus)
        relay = Relay(env, tmp_path / "relay.log")
        relay.start()
        with (tmp_path / "consume.log").open("ab") as log:
            consumer = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "events", "consume", "--insecure-local"),
                    *("--receivers", "2", "--duration", str(ARRIVAL_SECONDS + 30)),
                ],
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield cosmos.client().get_database_client(topology.cosmos.database)
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(timeout=40)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait(timeout=10)
            relay.stop()


def _all(container: ContainerProxy) -> list[dict[str, Any]]:
    return list(container.query_items("SELECT * FROM c", enable_cross_partition_query=True))


def _projections(container: ContainerProxy) -> dict[str, dict[str, Any]]:
    """The handler's documents; the transactional inbox keeps its records beside them."""
    return {str(d["id"]): d for d in _all(container) if "kind" not in d}


def _statuses(projection: ContainerProxy) -> dict[str, str]:
    return {key: str(d["status"]) for key, d in _projections(projection).items()}


def test_consume_command_projects_relayed_order_events_into_the_consumer_container(
    database: DatabaseProxy,
) -> None:
    orders = database.get_container_client("orders")
    writer = OutboxWriter(orders, partition_key_path="/partitionKey")
    for order_id in ORDERS:
        placed = OrderPlacedV1(
            order_id=order_id, customer_id="c-1", total_cents=100, currency="EUR", line_count=1
        )
        writer.save(_order(order_id, "placed"), [OutboxEvent(placed, subject=order_id)])
    for order_id in ORDERS[:2]:
        orders.upsert_item(_order(order_id, "paid"))
    orders.upsert_item(_order(ORDERS[0], "shipped"))
    expected = {"o-1": "shipped", "o-2": "paid", "o-3": "placed"}
    projection = database.get_container_client("order-status")

    deadline = time.monotonic() + ARRIVAL_SECONDS
    seen = _statuses(projection)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = _statuses(projection)

    assert seen == expected
    documents = _projections(projection)
    assert documents["o-1"]["orderId"] == "o-1"
    assert documents["o-1"]["eventType"] == "OrderUpserted"
    assert all("customerEmail" not in d and "customerId" not in d for d in documents.values())
    # Declared transactional: one inbox record per event, in the event's own partition,
    # committed in the same batch as the projection.
    records = [d for d in _all(projection) if d.get("kind") == INBOX_KIND]
    assert len({r["eventId"] for r in records}) == len(records) >= len(ORDERS)
    assert all(r["consumer"] == "order-status" and r["orderId"] in ORDERS for r in records)
