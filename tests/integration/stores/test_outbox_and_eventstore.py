"""The application-side writers against the local Cosmos DB server with the real SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.cosmos import ContainerProxy, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from events.adapters.cosmos.eventstore import EventStore, NewEvent
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.core.sources.outbox import outbox_event_id
from events.deployment.contracts import OrderPlacedV1, OrderShippedV1
from events.errors import (
    ConcurrencyConflictError,
    OutboxConflictError,
    OutboxError,
    OutboxPreconditionFailedError,
    OutboxTooLargeError,
    OutboxTooManyOperationsError,
    PartitionKeyMismatchError,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def orders(cosmos_database: DatabaseProxy) -> ContainerProxy:
    return cosmos_database.create_container(
        id="orders", partition_key=PartitionKey(path="/partitionKey"), default_ttl=-1
    )


@pytest.fixture
def streams(cosmos_database: DatabaseProxy) -> ContainerProxy:
    return cosmos_database.create_container(
        id="eventstore", partition_key=PartitionKey(path="/streamId")
    )


def _order(order_id: str = "order-1", status: str = "placed") -> dict[str, object]:
    return {
        "id": order_id,
        "partitionKey": order_id,
        "type": "Order",
        "status": status,
        "customerId": "c-1",
        "totalCents": 100,
        "currency": "EUR",
    }


def _placed(order_id: str = "order-1", event_id: str = "evt-1") -> OutboxEvent:
    payload = OrderPlacedV1(
        order_id=order_id, customer_id="c-1", total_cents=100, currency="EUR", line_count=1
    )
    return OutboxEvent(payload=payload, subject=order_id, event_id=event_id, time=NOW)


def _ids(container: ContainerProxy, partition_key: str) -> list[str]:
    return sorted(
        item["id"]
        for item in container.query_items("SELECT c.id FROM c", partition_key=partition_key)
    )


def test_outbox_writer_saves_entity_and_events_in_one_batch(orders: ContainerProxy) -> None:
    writer = OutboxWriter(orders, clock=lambda: NOW)

    ids = writer.save(_order(), [_placed(event_id="evt-1"), _placed(event_id="evt-2")])

    assert ids == [outbox_event_id(orders.id, "order-1", e) for e in ("evt-1", "evt-2")]
    assert _ids(orders, "order-1") == ["evt-1", "evt-2", "order-1"]
    event = orders.read_item("evt-1", partition_key="order-1")
    assert event["type"] == "outbox"
    assert event["eventType"] == "OrderPlaced"
    assert event["ttl"] == 864000
    assert event["data"]["orderId"] == "order-1"


def test_outbox_writer_conflicting_batch_writes_nothing(orders: ContainerProxy) -> None:
    writer = OutboxWriter(orders)
    writer.save(_order(), [_placed(event_id="evt-1")])

    with pytest.raises(OutboxConflictError, match="already exists") as raised:
        writer.save(_order(status="paid"), [_placed(event_id="evt-2"), _placed(event_id="evt-1")])

    assert raised.value.status == 409
    assert _ids(orders, "order-1") == ["evt-1", "order-1"]
    assert orders.read_item("order-1", partition_key="order-1")["status"] == "placed"
    with pytest.raises(CosmosResourceNotFoundError):
        orders.read_item("evt-2", partition_key="order-1")


def test_outbox_writer_stale_etag_is_a_failed_precondition_not_a_conflict_and_writes_nothing(
    orders: ContainerProxy,
) -> None:
    writer = OutboxWriter(orders)
    writer.save(_order(), [])
    etag = orders.read_item("order-1", partition_key="order-1")["_etag"]
    writer.save(_order(status="paid"), [])

    with pytest.raises(OutboxPreconditionFailedError, match="etag") as raised:
        writer.save(_order(status="shipped"), [_placed(event_id="evt-9")], if_match_etag=etag)

    assert not isinstance(raised.value, OutboxConflictError)
    assert (raised.value.status, dict(raised.value.ids)) == (412, {"entity": "order-1"})
    assert orders.read_item("order-1", partition_key="order-1")["status"] == "paid"


def test_outbox_writer_more_than_100_operations_is_refused_before_writing(
    orders: ContainerProxy,
) -> None:
    events = [_placed(event_id=f"evt-{n}") for n in range(100)]

    with pytest.raises(OutboxTooManyOperationsError, match="at most 100"):
        OutboxWriter(orders).save(_order(), events)

    assert _ids(orders, "order-1") == []


def test_outbox_writer_batch_over_2_mb_is_refused_before_writing(orders: ContainerProxy) -> None:
    events = [
        OutboxEvent(
            payload=OrderShippedV1(order_id="order-1", carrier="x" * 300_000),
            subject="order-1",
            event_id=f"evt-{n}",
        )
        for n in range(8)
    ]

    with pytest.raises(OutboxTooLargeError, match="2097152"):
        OutboxWriter(orders).save(_order(), events)

    assert _ids(orders, "order-1") == []


def test_outbox_writer_event_in_another_partition_is_refused(orders: ContainerProxy) -> None:
    event = OutboxEvent(
        payload=_placed().payload, subject="order-1", partition_key="order-2", event_id="e"
    )

    with pytest.raises(PartitionKeyMismatchError, match="one logical partition"):
        OutboxWriter(orders).save(_order(), [event])

    assert _ids(orders, "order-1") == []


def test_outbox_writer_entity_without_partition_key_is_refused(orders: ContainerProxy) -> None:
    entity = _order()
    del entity["partitionKey"]

    with pytest.raises(OutboxError, match="partition key"):
        OutboxWriter(orders).save(entity, [_placed()])


def test_eventstore_append_then_read_returns_events_in_version_order(
    streams: ContainerProxy,
) -> None:
    store = EventStore(streams, clock=lambda: NOW)

    version = store.append("pay-1", 0, [NewEvent("PaymentAuthorized", {"n": 1})])
    version = store.append("pay-1", version, [NewEvent("PaymentCaptured", {"n": 2})] * 2)

    assert version == 3
    assert [(e.version, e.event_type) for e in store.read("pay-1")] == [
        (1, "PaymentAuthorized"),
        (2, "PaymentCaptured"),
        (3, "PaymentCaptured"),
    ]
    assert [e.version for e in store.read("pay-1", after_version=2)] == [3]


def test_eventstore_append_with_stale_expected_version_conflicts_and_writes_nothing(
    streams: ContainerProxy,
) -> None:
    store = EventStore(streams)
    store.append("pay-1", 0, [NewEvent("PaymentAuthorized", {})])
    store.append("pay-1", 1, [NewEvent("PaymentCaptured", {})])

    with pytest.raises(ConcurrencyConflictError, match="past version 1"):
        store.append("pay-1", 1, [NewEvent("PaymentRefunded", {}), NewEvent("Noted", {})])

    assert [e.event_type for e in store.read("pay-1")] == ["PaymentAuthorized", "PaymentCaptured"]
