"""Settlement on the local broker with the real SDK: complete, abandon, dead-letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue

from devstack.servicebus import LocalServiceBus
from events.adapters.receiving import receive_until_idle, settle
from events.adapters.servicebus import to_sdk_message
from events.core.consumer import IdempotentConsumer, InMemoryInbox, payload_hash
from events.core.envelope import IntegrationEvent
from events.core.messages import Router, to_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOPIC = "integration-events"
SUBSCRIPTION = "orders-placed"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _event(event_id: str) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/orders",
        type="OrderPlaced",
        subject="order-1",
        time=NOW,
        data={"orderId": "order-1"},
        partitionkey="order-1",
    )


def _send(client: ServiceBusClient, *messages: ServiceBusMessage) -> None:
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(list(messages))


def test_settle_live_claim_abandons_then_the_redelivery_completes(
    servicebus_client: ServiceBusClient,
) -> None:
    inbox = InMemoryInbox()
    event = _event("evt-1")
    # Another delivery holds a live claim on the event.
    live_until = datetime.now(UTC) + timedelta(days=1)
    claim = inbox.create("billing", "evt-1", payload_hash(event), live_until, 600)
    assert claim is not None
    handled: list[str] = []
    consumer = IdempotentConsumer("billing", inbox, lambda e: handled.append(e.id))
    _send(servicebus_client, to_sdk_message(to_message(event, Router(TOPIC))))

    with servicebus_client.get_subscription_receiver(
        TOPIC, SUBSCRIPTION, max_wait_time=5
    ) as receiver:
        [first] = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        abandoned = settle(receiver, first, consumer)
        inbox.release(claim)  # the other delivery failed and let go
        [again] = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        completed = settle(receiver, again, consumer)
        rest = receive_until_idle(receiver, consumer, wait_seconds=1)

    assert (abandoned.settlement, abandoned.reason) == (
        "abandon",
        "EventInProgressError",
    )
    assert again.delivery_count == 1
    assert completed.settlement == "complete"
    assert completed.outcome is not None
    assert completed.outcome.handled
    assert rest == []
    assert handled == ["evt-1"]


def test_settle_message_that_is_no_integration_event_is_dead_lettered(
    servicebus_client: ServiceBusClient, local_servicebus: LocalServiceBus
) -> None:
    handled: list[str] = []
    consumer = IdempotentConsumer("billing", InMemoryInbox(), lambda e: handled.append(e.id))
    _send(servicebus_client, ServiceBusMessage(b"not json", subject="OrderPlaced"))

    with servicebus_client.get_subscription_receiver(
        TOPIC, SUBSCRIPTION, max_wait_time=5
    ) as receiver:
        settled = receive_until_idle(receiver, consumer, wait_seconds=2)
    with servicebus_client.get_subscription_receiver(
        TOPIC, SUBSCRIPTION, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5
    ) as dead_letters:
        [dead] = dead_letters.receive_messages(max_message_count=5, max_wait_time=5)
        dead_letters.complete_message(dead)

    assert [(s.settlement, s.reason) for s in settled] == [("dead-letter", "InvalidEvent")]
    assert dead.dead_letter_reason == "InvalidEvent"
    assert handled == []
    # (The session-enabled subscription "all" dead-letters it too: it has no session id.)
    assert local_servicebus.stats.dead_lettered[f"{TOPIC}/Subscriptions/{SUBSCRIPTION}"] == 1


def test_settle_handler_exception_abandons_for_redelivery(
    servicebus_client: ServiceBusClient,
) -> None:
    attempts: list[str] = []

    def flaky(event: IntegrationEvent) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("downstream unavailable")

    consumer = IdempotentConsumer("billing", InMemoryInbox(), flaky)
    _send(servicebus_client, to_sdk_message(to_message(_event("evt-2"), Router(TOPIC))))

    with servicebus_client.get_subscription_receiver(
        TOPIC, SUBSCRIPTION, max_wait_time=5
    ) as receiver:
        settled = receive_until_idle(receiver, consumer, batch=1, wait_seconds=2)

    assert [(s.settlement, s.reason) for s in settled] == [
        ("abandon", "RuntimeError"),
        ("complete", None),
    ]
    assert attempts == ["evt-2", "evt-2"]
