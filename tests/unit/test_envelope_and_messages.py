"""CloudEvents envelope and its Service Bus message form (binary mode)."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings.amqp import AMQPMessage, from_binary_event
from pydantic import ValidationError

from events.core.envelope import IntegrationEvent, deterministic_id, sequence_of
from events.core.messages import Router, event_from_message, to_message
from events.core.sources import CdcSource, OutboxSource, SourceContext
from events.deployment.contracts import default_registry
from tests import factories
from tests.factories import ORDER_CDC

CONTEXT = SourceContext(
    source_uri="/integration-relay/relay/orders", container="orders", contracts=default_registry()
)
ROUTER = Router(default="integration-events", routes={"PaymentCaptured": "payments"})


def _event() -> IntegrationEvent:
    document = factories.placed(event_id="evt-7")
    document["_lsn"] = 4711
    [event] = OutboxSource().to_events(document, "order-1", CONTEXT)
    return event


def test_deterministic_id_same_parts_same_id_other_parts_other_id() -> None:
    assert deterministic_id("a", "b") == deterministic_id("a", "b")
    assert deterministic_id("a", "b") != deterministic_id("ab")
    assert len(deterministic_id("x" * 500)) <= 128


def test_sequence_of_sorts_as_text_like_numbers() -> None:
    values = [1, 9, 10, 100, 2**62]

    assert sorted(sequence_of(v) for v in values) == [sequence_of(v) for v in values]
    with pytest.raises(ValueError, match="negative"):
        sequence_of(-1)


def test_envelope_malformed_traceparent_is_refused() -> None:
    with pytest.raises(ValidationError, match="traceparent"):
        IntegrationEvent.model_validate({**_event().model_dump(), "traceparent": "nope"})


def test_message_carries_ids_session_subject_content_type_and_cloudevents_properties() -> None:
    message = to_message(_event(), ROUTER)

    assert message.destination == "integration-events"
    assert message.message_id == factories.outbox_id("order-1", "evt-7")
    assert message.session_id == "order-1"
    assert message.subject == "OrderPlaced"
    assert message.content_type == "application/json"
    assert json.loads(message.body)["orderId"] == "order-1"
    assert dict(message.application_properties) == {
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": factories.outbox_id("order-1", "evt-7"),
        "cloudEvents:source": "/integration-relay/relay/orders",
        "cloudEvents:type": "OrderPlaced",
        "cloudEvents:subject": "order-1",
        "cloudEvents:time": "2026-01-02T03:04:05Z",
        "cloudEvents:dataschema": "https://schemas.integration-relay.dev/events/OrderPlaced/v1.json",
        "cloudEvents:partitionkey": "order-1",
        "cloudEvents:sequence": sequence_of(4711),
        "cloudEvents:traceparent": factories.TRACEPARENT,
        "Diagnostic-Id": factories.TRACEPARENT,
    }


def test_message_routing_sends_configured_types_elsewhere() -> None:
    event = _event().model_copy(update={"type": "PaymentCaptured"})

    assert to_message(event, ROUTER).destination == "payments"


def test_message_parsed_by_cloudevents_sdk_is_a_valid_cloudevent() -> None:
    message = to_message(_event(), ROUTER)
    amqp = AMQPMessage(
        properties={"content-type": message.content_type},
        application_properties=dict(message.application_properties),
        application_data=message.body,
    )

    parsed = from_binary_event(amqp)

    assert parsed.get_id() == factories.outbox_id("order-1", "evt-7")
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_type() == "OrderPlaced"
    assert parsed.get_source() == "/integration-relay/relay/orders"
    assert parsed.get_subject() == "order-1"
    assert parsed.get_time() == factories.FIXED_TIME
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_extension("sequence") == sequence_of(4711)
    assert parsed.get_extension("traceparent") == factories.TRACEPARENT
    assert parsed.get_extension("partitionkey") == "order-1"
    assert parsed.get_data() == _event().data


def test_message_read_back_gives_the_same_event() -> None:
    [event] = CdcSource([ORDER_CDC]).to_events(factories.order(), "order-1", CONTEXT)
    message = to_message(event, ROUTER)
    raw: dict[str | bytes, object] = {
        k.encode(): v.encode() for k, v in message.application_properties.items()
    }

    assert event_from_message(message.body, raw, message.content_type) == event
