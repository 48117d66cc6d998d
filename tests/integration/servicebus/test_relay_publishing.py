"""A relayed batch read back with the real azure-servicebus SDK: every property of the
published integration events, and what the broker saw (sends, duplicates, size refusals)."""

from __future__ import annotations

import pytest
from azure.servicebus import ServiceBusClient
from cloudevents.core.bindings.amqp import AMQPMessage, from_binary_event

from devstack.servicebus import LocalServiceBus
from events.adapters.servicebus import ServiceBusPublisher, to_sdk_message
from events.core.messages import OutgoingMessage, Router, event_from_message
from events.core.quarantine import InMemoryQuarantine, QuarantineReason
from events.core.relay import Relay
from events.errors import PublishUnavailableError
from tests import factories

pytestmark = pytest.mark.integration


def _relay(client: ServiceBusClient) -> tuple[Relay, InMemoryQuarantine]:
    quarantine = InMemoryQuarantine()
    feed = factories.feed()
    publisher = ServiceBusPublisher(client)
    return Relay(feed, publisher, quarantine, Router(default="integration-events")), quarantine


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_relayed_event_read_back_has_every_property_and_is_a_valid_cloudevent(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    relay, _ = _relay(servicebus_client)
    document = factories.placed("order-5", "evt-55")

    relay.process([document])

    with servicebus_client.get_subscription_receiver(
        "integration-events", "all", session_id="order-5", max_wait_time=2
    ) as receiver:
        [message] = receiver.receive_messages(max_message_count=10, max_wait_time=2)
        receiver.complete_message(message)
    properties = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
    body = b"".join(message.body)
    assert message.message_id == factories.outbox_id("order-5", "evt-55")
    assert message.session_id == "order-5"
    assert message.subject == "OrderPlaced"
    assert message.content_type == "application/json"
    assert properties["cloudEvents:id"] == factories.outbox_id("order-5", "evt-55")
    assert properties["cloudEvents:type"] == "OrderPlaced"
    assert properties["cloudEvents:specversion"] == "1.0"
    assert properties["cloudEvents:traceparent"] == factories.TRACEPARENT
    assert properties["Diagnostic-Id"] == factories.TRACEPARENT
    parsed = from_binary_event(
        AMQPMessage(
            properties={"content-type": message.content_type},
            application_properties=properties,
            application_data=body,
        )
    )
    assert parsed.get_id() == factories.outbox_id("order-5", "evt-55")
    assert parsed.get_subject() == "order-5"
    event = event_from_message(body, message.application_properties or {}, message.content_type)
    assert event.data["orderId"] == "order-5"
    assert event.dataschema == parsed.get_dataschema()


def test_relayed_batch_takes_one_send_and_a_retry_is_dropped_as_duplicates(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    relay, _ = _relay(servicebus_client)
    batch = [factories.placed(f"order-{n % 4}", f"evt-{n}") for n in range(40)]

    relay.process(batch)
    relay.process(batch)  # a redelivered batch

    stats = local_servicebus.stats
    assert stats.transfers["integration-events"] == 2
    assert stats.messages["integration-events"] == 40
    assert stats.duplicates["integration-events"] == 40


def test_relayed_event_over_the_size_limit_is_quarantined_others_published(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    relay, quarantine = _relay(servicebus_client)
    huge = factories.shipped("order-2", "evt-huge", carrier="x" * 300_000)

    outcome = relay.process([factories.placed("order-1", "evt-1"), huge])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    assert [r.reason for r in quarantine.records.values()] == [QuarantineReason.EVENT_TOO_LARGE]
    assert local_servicebus.stats.messages["integration-events"] == 1


def test_relay_server_busy_raises_transient_and_the_retry_publishes_each_once(
    local_servicebus: LocalServiceBus,
) -> None:
    with ServiceBusClient.from_connection_string(
        local_servicebus.connection_string, retry_total=0
    ) as client:
        relay, _ = _relay(client)
        batch = [factories.placed("order-1", "evt-1"), factories.placed("order-2", "evt-2")]
        local_servicebus.faults.server_busy(1)

        with pytest.raises(PublishUnavailableError):
            relay.process(batch)
        relay.process(batch)

    assert local_servicebus.stats.messages["integration-events"] == 2


def _filling(count: int, size: int, last: int) -> list[OutgoingMessage]:
    sizes = [size] * count + [last]
    return [
        OutgoingMessage(
            destination="integration-events",
            message_id=f"m-{n:05d}",
            session_id="s",
            subject="OrderPlaced",
            content_type="application/json",
            body=b"x" * body,
            application_properties={"cloudEvents:id": f"m-{n:05d}"},
        )
        for n, body in enumerate(sizes)
    ]


def test_publisher_batch_the_sdk_sizes_at_exactly_the_limit_is_still_accepted(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    # 25 messages of 10 000 bytes and one of 9 414 fill the SDK's batch count to exactly
    # 262 144 bytes; the transfer's envelope makes it larger on the wire.
    messages = _filling(25, 10_000, 9_414)
    sender = servicebus_client.get_topic_sender("integration-events")
    exact = sender.create_message_batch()
    for message in messages:
        exact.add_message(to_sdk_message(message))
    assert exact.size_in_bytes == exact.max_size_in_bytes

    sends = ServiceBusPublisher(servicebus_client).publish(messages)

    assert sends == 2
    assert local_servicebus.stats.messages["integration-events"] == 26
    assert local_servicebus.stats.rejected.get("integration-events", 0) == 0
