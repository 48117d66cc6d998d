"""The relay's and the consumer's spans and metrics, recorded by an in-memory OpenTelemetry SDK.

Span shapes (docs/observability.md): one ``relay <feed>`` span per batch linked to each
distinct writer context, one ``send <destination>`` span per send under it, and the consumer's
``process <consumer>`` span a child of the event's traceparent.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from events.core.consumer import IdempotentConsumer, InMemoryInbox
from events.core.envelope import IntegrationEvent
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.core.telemetry import (
    METRIC_BATCH_DURATION,
    METRIC_PUBLISHED,
    METRIC_QUARANTINED,
    METRIC_SENDS,
    current_traceparent,
    instrument,
)
from events.errors import PublishUnavailableError
from events.hosts.functions import blueprint
from tests import factories
from tests.fixtures.telemetry import Recorded

WRITER_A = "00-11111111111111111111111111111111-aaaaaaaaaaaaaaaa-01"
WRITER_B = "00-22222222222222222222222222222222-bbbbbbbbbbbbbbbb-01"


def _placed(order_id: str, event_id: str, traceparent: str | None) -> dict[str, Any]:
    document = factories.placed(order_id, event_id)
    if traceparent is None:
        del document["traceparent"]
    else:
        document["traceparent"] = traceparent
    return document


def _trace_id(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


def _one(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _event(traceparent: str | None, event_id: str = "e-1") -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/integration-relay/relay/orders",
        type="OrderPlaced",
        subject="order-1",
        time=factories.FIXED_TIME,
        data={"orderId": "order-1"},
        traceparent=traceparent,
        partitionkey="order-1",
    )


def test_relay_batch_span_links_each_distinct_writer_once(recorded: Recorded) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    batch = [
        _placed("o-1", "e-1", WRITER_A),
        _placed("o-2", "e-2", WRITER_B),
        _placed("o-3", "e-3", WRITER_A),
        _placed("o-4", "e-4", None),
    ]

    relay.process(batch)

    span = _one(recorded.spans("relay "))
    assert span.name == "relay relay_orders"
    assert span.kind is SpanKind.CONSUMER
    assert [link.context.trace_id for link in span.links] == [
        _trace_id(WRITER_A),
        _trace_id(WRITER_B),
    ]
    assert span.parent is None  # a batch of many writers is a child of none of them
    assert span.attributes is not None
    assert span.attributes["events.feed"] == "relay_orders"
    assert span.attributes["db.collection.name"] == "orders"
    assert span.attributes["events.batch.documents"] == 4
    assert span.attributes["events.batch.published"] == 4
    assert span.attributes["events.batch.quarantined"] == 0
    assert span.attributes["events.batch.sends"] == 1


def test_relay_send_spans_one_per_send_children_of_the_batch_and_linked(
    recorded: Recorded,
) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"], max_batch_size=1500)
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    batch = [_placed(f"o-{n}", f"e-{n}", WRITER_A if n < 3 else WRITER_B) for n in range(6)]

    outcome = relay.process(batch)

    batch_span = _one(recorded.spans("relay "))
    sends = recorded.spans("send ")
    assert outcome.sends == publisher.sends == len(sends) > 1
    assert {s.name for s in sends} == {"send integration-events"}
    for span in sends:
        assert span.kind is SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == batch_span.context.span_id
        assert span.context.trace_id == batch_span.context.trace_id
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "servicebus"
        assert span.attributes["messaging.operation.type"] == "send"
        assert span.attributes["messaging.destination.name"] == "integration-events"
    counts = [(s.attributes or {}).get("messaging.batch.message_count", 1) for s in sends]
    assert sum(c for c in counts if isinstance(c, int)) == 6
    linked = {link.context.trace_id for span in sends for link in span.links}
    assert linked == {_trace_id(WRITER_A), _trace_id(WRITER_B)}


def test_relay_counters_after_a_batch_with_a_quarantined_document(recorded: Recorded) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    invalid = factories.placed("o-9", "e-9", totalCents="4200")  # a string: not an integer
    batch = [_placed("o-1", "e-1", WRITER_A), invalid, _placed("o-2", "e-2", WRITER_B)]

    relay.process(batch)
    relay.process([_placed("o-3", "e-3", WRITER_A)])

    assert recorded.total(METRIC_PUBLISHED, **{"events.feed": "relay_orders"}) == 3
    assert recorded.total(METRIC_QUARANTINED, **{"events.feed": "relay_orders"}) == 1
    assert recorded.total(METRIC_SENDS, **{"events.feed": "relay_orders"}) == 2
    [duration] = recorded.points(METRIC_BATCH_DURATION)
    assert isinstance(duration, HistogramDataPoint)
    assert duration.count == 2
    assert duration.sum > 0
    assert dict(duration.attributes or {}) == {"events.feed": "relay_orders"}


def test_relay_transient_failure_marks_the_span_and_counts_nothing_published(
    recorded: Recorded,
) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    publisher.fail_on_send(1)

    with pytest.raises(PublishUnavailableError):
        relay.process([_placed("o-1", "e-1", WRITER_A)])

    span = _one(recorded.spans("relay "))
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "PublishUnavailableError"
    assert _one(recorded.spans("send ")).status.status_code is StatusCode.ERROR
    assert recorded.total(METRIC_PUBLISHED) == 0
    [duration] = recorded.points(METRIC_BATCH_DURATION)
    assert dict(duration.attributes or {}) == {
        "events.feed": "relay_orders",
        "error.type": "PublishUnavailableError",
    }


def test_consumer_span_is_a_child_of_the_event_traceparent(recorded: Recorded) -> None:
    seen: list[str | None] = []
    consumer = IdempotentConsumer(
        "billing", InMemoryInbox(), lambda event: seen.append(current_traceparent())
    )

    consumer.handle(_event(WRITER_A))

    span = _one(recorded.spans("process "))
    assert span.name == "process billing"
    assert span.kind is SpanKind.CONSUMER
    assert span.context.trace_id == _trace_id(WRITER_A)
    assert span.parent is not None
    assert span.parent.span_id == int(WRITER_A.split("-")[2], 16)
    assert span.parent.is_remote
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == "e-1"
    assert span.attributes["messaging.consumer.group.name"] == "billing"
    assert span.attributes["cloudevents.event_type"] == "OrderPlaced"
    # The handler runs inside the span: what it writes joins the same trace.
    assert seen == [f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"]


def test_consumer_duplicate_opens_no_span_and_no_traceparent_starts_a_trace(
    recorded: Recorded,
) -> None:
    consumer = IdempotentConsumer("billing", InMemoryInbox(), lambda event: None)

    consumer.handle(_event(None))
    consumer.handle(_event(None))  # a redelivery

    span = _one(recorded.spans("process "))
    assert span.parent is None
    assert span.context.trace_id != 0


def test_consumer_handler_failure_marks_the_span_with_the_type_only(recorded: Recorded) -> None:
    def handler(event: IntegrationEvent) -> None:
        raise ValueError("customer someone@example.com has no address")

    consumer = IdempotentConsumer("billing", InMemoryInbox(), handler)

    with pytest.raises(ValueError, match="no address"):
        consumer.handle(_event(WRITER_B))

    span = _one(recorded.spans("process "))
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert span.events == ()  # no exception event: its text is the application's
    assert "someone@example.com" not in repr(dict(span.attributes or {}))


def test_current_traceparent_is_the_callers_span_or_none(recorded: Recorded) -> None:
    assert current_traceparent() is None
    with recorded.tracer.start_as_current_span("place order") as span:
        context = span.get_span_context()
        flags = f"{context.trace_flags:02x}"
        assert current_traceparent() == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def test_telemetry_without_a_provider_relays_and_records_nothing() -> None:
    instrument()  # the API's globals, which no test sets: no-ops
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    consumer = IdempotentConsumer("billing", InMemoryInbox(), lambda event: None)

    outcome = relay.process([_placed("o-1", "e-1", WRITER_A)])
    consumer.handle(_event(WRITER_A))

    assert outcome.published == 1
    assert current_traceparent() is None
    assert not trace.get_current_span().is_recording()


_TRACEPARENTS = st.one_of(
    st.none(),
    st.sampled_from([WRITER_A, WRITER_B]),
    st.builds(
        lambda t, s: f"00-{t:032x}-{s:016x}-01",
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**64 - 1),
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(traceparents=st.lists(_TRACEPARENTS, min_size=1, max_size=12))
def test_relay_batch_links_are_exactly_the_distinct_valid_writer_contexts(
    recorded: Recorded, traceparents: list[str | None]
) -> None:
    recorded.exporter.clear()
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    batch = [_placed(f"o-{n}", f"e-{n}", tp) for n, tp in enumerate(traceparents)]

    relay.process(batch)

    span = _one(recorded.spans("relay "))
    # An all-zero trace or span id is invalid in W3C trace context: no link to it.
    valid = [
        tp
        for tp in dict.fromkeys(traceparents)
        if tp is not None and _trace_id(tp) != 0 and int(tp.split("-")[2], 16) != 0
    ]
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
        (_trace_id(tp), int(tp.split("-")[2], 16)) for tp in valid
    ]


def test_functions_trigger_invocation_traces_the_batch_and_counts_a_retried_batch_once(
    recorded: Recorded,
) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    publisher.fail_on_send(1)
    runtime, _, _ = factories.in_memory_runtime(publisher)
    app = func.FunctionApp()
    app.register_functions(blueprint(lambda: runtime))
    [relay_orders] = [
        fn.get_user_function()
        for fn in app.get_functions()
        if fn.get_function_name() == "relay_orders"
    ]
    documents = func.DocumentList([func.Document.from_dict(_placed("o-1", "e-1", WRITER_A))])

    with pytest.raises(PublishUnavailableError):
        relay_orders(documents)  # the host retries the same batch
    relay_orders(documents)

    failed, succeeded = recorded.spans("relay ")
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.status.status_code is StatusCode.UNSET
    assert [link.context.trace_id for link in succeeded.links] == [_trace_id(WRITER_A)]
    assert recorded.total(METRIC_PUBLISHED) == 1
    assert recorded.total(METRIC_SENDS) == 1
    durations = recorded.points(METRIC_BATCH_DURATION)
    assert sorted(str(dict(p.attributes or {}).get("error.type", "")) for p in durations) == [
        "",
        "PublishUnavailableError",
    ]
