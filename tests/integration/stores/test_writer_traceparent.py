"""The writers stamp the application's current span on the event documents (real azure-cosmos
against the local Cosmos DB server): the relay links to it and the consumer continues it."""

from __future__ import annotations

from typing import Any

import pytest
from azure.cosmos import ContainerProxy, DatabaseProxy, PartitionKey

from events.adapters.cosmos.eventstore import EventStore, NewEvent
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.deployment.contracts import OrderShippedV1
from tests.fixtures.telemetry import Recorded

pytestmark = pytest.mark.integration

EXPLICIT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


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


def _traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _shipped(event_id: str, traceparent: str | None = None) -> OutboxEvent:
    payload = OrderShippedV1(order_id="o-1", carrier="DHL")
    return OutboxEvent(payload, subject="o-1", event_id=event_id, traceparent=traceparent)


def test_outbox_writer_takes_the_current_span_unless_an_event_names_its_own(
    orders: ContainerProxy, recorded: Recorded
) -> None:
    writer = OutboxWriter(orders)
    entity = {"id": "o-1", "partitionKey": "o-1", "type": "Order", "status": "shipped"}

    with recorded.tracer.start_as_current_span("ship order") as span:
        writer.save(entity, [_shipped("e-1"), _shipped("e-2", EXPLICIT)])
    writer.save(entity, [_shipped("e-3")])  # no span: nothing to carry

    documents = {d["id"]: d for d in orders.read_all_items()}
    assert documents["e-1"]["traceparent"] == _traceparent_of(span)
    assert documents["e-2"]["traceparent"] == EXPLICIT
    assert "traceparent" not in documents["e-3"]


def test_event_store_append_takes_the_current_span(
    streams: ContainerProxy, recorded: Recorded
) -> None:
    store = EventStore(streams)

    with recorded.tracer.start_as_current_span("capture payment") as span:
        store.append("p-1", 0, [NewEvent("PaymentCaptured", {"paymentId": "p-1"})] * 2)

    documents = list(streams.read_all_items())
    assert len(documents) == 2
    assert {d["traceparent"] for d in documents} == {_traceparent_of(span)}
