"""One trace from the application's write to the consumer's handler, on the local stack.

The application starts a span and writes an order and its OrderPlaced event with the
OutboxWriter (real azure-cosmos, local Cosmos DB server); the relay, in this process with the
real adapters (the change-feed processor of ``python -m events run``), publishes it (real
azure-servicebus, local broker); a consumer receives it with the real SDK and handles it
through the IdempotentConsumer and the Cosmos inbox. The consumer's span must carry the
application's trace id, and the relay's batch and send spans must link to the application's
span. Spans are recorded by an in-memory OpenTelemetry SDK (tests/fixtures/telemetry.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos import DatabaseProxy
from azure.servicebus import ServiceBusClient

from devstack.cosmos import LocalCosmos
from devstack.demo.stack import Relay, local_stack, relay_environment
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.adapters.cosmos.stores import CosmosInbox
from events.core.consumer import IdempotentConsumer
from events.core.envelope import IntegrationEvent
from events.core.messages import event_from_message
from events.core.telemetry import METRIC_PUBLISHED, current_traceparent
from events.deployment.contracts import OrderPlacedV1
from events.deployment.settings import TELEMETRY
from events.deployment.topology import load_topology
from events.hosts.processor import build_processors, parse_args
from events.hosts.runtime import Runtime
from tests.fixtures.telemetry import Recorded

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Bound on waiting for the event to reach the consumer (it takes a few seconds).
DELIVERY_SECONDS = 60.0
ORDER = "order-traced"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LocalCosmos, LocalServiceBus]]:
    with local_stack(load_topology(), tmp_path) as servers:
        yield servers


def _order() -> tuple[dict[str, object], OutboxEvent]:
    order = {
        "id": ORDER,
        "partitionKey": ORDER,
        "type": "Order",
        "status": "placed",
        "customerId": "c-1",
        "totalCents": 4200,
        "currency": "EUR",
    }
    placed = OrderPlacedV1(
        order_id=ORDER, customer_id="c-1", total_cents=4200, currency="EUR", line_count=1
    )
    return order, OutboxEvent(placed, subject=ORDER)


def _database(cosmos: LocalCosmos) -> DatabaseProxy:
    return cosmos.client().get_database_client(load_topology().cosmos.database)


def _relay_in_process(
    cosmos: LocalCosmos, bus: LocalServiceBus, stop: threading.Event
) -> list[threading.Thread]:
    """The processors ``python -m events run`` runs, on threads of this process."""
    runtime = Runtime.from_environment(relay_environment(cosmos, bus), verify_tls=False)
    fast = ["--poll-interval", "0.2", "--acquire-interval", "1", "--lease-duration", "20"]
    args = parse_args(["--insecure-local", *fast, "--renew-interval", "5"])
    processors = build_processors(runtime, cosmos.client(), args, "trace-test")
    threads = [
        threading.Thread(target=p.run, args=(stop,), name=f"trace-{p.name}", daemon=True)
        for p in processors
    ]
    for thread in threads:
        thread.start()
    return threads


def _receive_and_handle(
    bus: LocalServiceBus, consumer: IdempotentConsumer, event_id: str
) -> IntegrationEvent:
    """Receive the order's session until the event arrives; handle each event received."""
    deadline = time.monotonic() + DELIVERY_SECONDS
    with ServiceBusClient.from_connection_string(bus.connection_string) as client:
        while time.monotonic() < deadline:
            with client.get_subscription_receiver(
                "integration-events", "all", session_id=ORDER, max_wait_time=2
            ) as receiver:
                for message in receiver.receive_messages(max_message_count=10, max_wait_time=2):
                    event = event_from_message(
                        b"".join(message.body),
                        message.application_properties or {},
                        message.content_type,
                    )
                    consumer.handle(event)
                    receiver.complete_message(message)
                    if event.id == event_id:
                        return event
    raise AssertionError(f"event {event_id} did not arrive within {DELIVERY_SECONDS:g} s")


def test_trace_consumer_span_continues_the_application_trace_on_the_local_stack(
    stack: tuple[LocalCosmos, LocalServiceBus], recorded: Recorded
) -> None:
    cosmos, bus = stack
    database = _database(cosmos)
    writer = OutboxWriter(database.get_container_client("orders"))
    order, placed = _order()
    with recorded.tracer.start_as_current_span("place order") as application_span:
        [event_id] = writer.save(order, [placed])
    application = application_span.get_span_context()

    handled: list[str | None] = []
    consumer = IdempotentConsumer(
        "trace-test",
        CosmosInbox(database.get_container_client("inbox")),
        lambda event: handled.append(current_traceparent()),
    )
    stop = threading.Event()
    threads = _relay_in_process(cosmos, bus, stop)
    try:
        event = _receive_and_handle(bus, consumer, event_id)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    # The message carries the application's context, written by the OutboxWriter.
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1:3] == [
        f"{application.trace_id:032x}",
        f"{application.span_id:016x}",
    ]
    # The consumer's span is a child of the application's span: one trace.
    [consumed] = [
        s
        for s in recorded.spans("process trace-test")
        if (s.attributes or {}).get("messaging.message.id") == event_id
    ]
    assert consumed.context.trace_id == application.trace_id
    assert consumed.parent is not None
    assert consumed.parent.span_id == application.span_id
    assert handled[-1] is not None
    assert handled[-1].split("-")[1] == f"{application.trace_id:032x}"
    # The relay's batch and send spans link to it (a batch mixes writers: links, not parents).
    linked = [
        s
        for s in recorded.spans()
        if any(link.context.span_id == application.span_id for link in s.links)
    ]
    kinds = {s.name.split(" ")[0] for s in linked}
    assert kinds == {"relay", "send"}
    [send] = [s for s in linked if s.name.startswith("send ")]
    assert (send.attributes or {})["messaging.destination.name"] == "integration-events"
    assert (send.attributes or {})["server.address"] == "127.0.0.1"
    assert all(s.context.trace_id != application.trace_id for s in linked)
    assert recorded.total(METRIC_PUBLISHED, **{"events.feed": "relay_orders"}) >= 1


def test_trace_run_command_with_console_telemetry_prints_spans_linked_to_the_writer(
    stack: tuple[LocalCosmos, LocalServiceBus], recorded: Recorded, tmp_path: Path
) -> None:
    cosmos, bus = stack
    writer = OutboxWriter(_database(cosmos).get_container_client("orders"))
    order, placed = _order()
    with recorded.tracer.start_as_current_span("place order") as application_span:
        writer.save(order, [placed])
    trace_id = f"{application_span.get_span_context().trace_id:032x}"
    log = tmp_path / "relay.log"
    relay = Relay({**relay_environment(cosmos, bus), TELEMETRY: "console"}, log)

    relay.start()
    try:
        deadline = time.monotonic() + DELIVERY_SECONDS
        while time.monotonic() < deadline and "span 'send integration-events'" not in (
            log.read_text() if log.exists() else ""
        ):
            time.sleep(0.5)
    finally:
        relay.stop()

    lines = log.read_text().splitlines()
    assert any("telemetry exporter=console" in line for line in lines)
    sends = [line for line in lines if line.startswith("span 'send integration-events'")]
    batches = [line for line in lines if line.startswith("span 'relay relay_orders'")]
    assert any(trace_id in line for line in sends)
    assert any(trace_id in line for line in batches)
