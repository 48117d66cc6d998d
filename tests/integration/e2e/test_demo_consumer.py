"""The demo consumer on the local broker and Cosmos DB server, and the broker's session wait."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from azure.cosmos import DatabaseProxy, PartitionKey
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient
from azure.servicebus.exceptions import OperationTimeoutError

from devstack.demo import Consumer, Ledger, Printer
from events.adapters.cosmos.stores import CosmosInbox
from events.adapters.servicebus import to_sdk_message
from events.core.envelope import IntegrationEvent, sequence_of
from events.core.messages import Router, to_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPIC = "integration-events"
TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _events(sessions: int, per_session: int) -> list[IntegrationEvent]:
    return [
        IntegrationEvent(
            id=f"evt-{s}-{v}",
            source="/integration-relay/orders",
            type="OrderPlaced",
            subject=f"order-{s}",
            time=TIME,
            data={"orderId": f"order-{s}"},
            sequence=sequence_of(v),
            partitionkey=f"order-{s}",
        )
        for v in range(per_session)
        for s in range(sessions)
    ]


def _send(client: ServiceBusClient, events: list[IntegrationEvent]) -> None:
    router = Router(TOPIC)
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages([to_sdk_message(to_message(e, router)) for e in events])


def _wait_until(check: Callable[[], bool], seconds: float) -> None:
    """Poll ``check()`` until true or ``seconds`` passed (a bound, not an assertion)."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def inbox(cosmos_database: DatabaseProxy) -> CosmosInbox:
    container = cosmos_database.create_container("inbox", PartitionKey("/consumer"))
    return CosmosInbox(container)


@pytest.fixture
def consuming(
    servicebus_client: ServiceBusClient, inbox: CosmosInbox
) -> Iterator[tuple[Ledger, Printer]]:
    """The demo consumer in six threads on the session subscription ``all``."""
    ledger = Ledger()
    printer = Printer()
    consumer = Consumer(servicebus_client, inbox, ledger, quiet=True, printer=printer)
    stop = threading.Event()
    threads = [
        threading.Thread(target=consumer.run, args=(TOPIC, stop), daemon=True) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    try:
        yield ledger, printer
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)


def test_broker_no_session_within_the_receivers_max_wait_time_answers_no_session(
    servicebus_client: ServiceBusClient,
) -> None:
    # The SDK sends max_wait_time as com.microsoft:timeout on the attach. A broker that ignores
    # it lets the SDK's own, longer, receive deadline fire instead, with another message.
    receiver = servicebus_client.get_subscription_receiver(
        TOPIC, "all", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
    )
    with pytest.raises(OperationTimeoutError, match="No session was available"):
        receiver.receive_messages(max_wait_time=30)
    receiver.close()


def test_consumer_many_sessions_in_parallel_every_event_once_in_session_order(
    servicebus_client: ServiceBusClient, consuming: tuple[Ledger, Printer]
) -> None:
    ledger, _printer = consuming
    events = _events(sessions=30, per_session=3)
    with ledger.lock:
        ledger.expected.update(e.id for e in events)
    _send(servicebus_client, events)

    _wait_until(lambda: ledger.counts()[1] == len(events), seconds=90)

    written, received, duplicates = ledger.counts()
    assert (written, received, duplicates) == (90, 90, 0)
    assert ledger.handled == 90
    for (destination, session), sequences in ledger.order_by_aggregate.items():
        assert destination == TOPIC
        assert sequences == [sequence_of(v) for v in range(3)], session


def test_consumer_event_redelivered_under_a_new_message_id_skipped_by_the_inbox(
    servicebus_client: ServiceBusClient, consuming: tuple[Ledger, Printer]
) -> None:
    ledger, _printer = consuming
    [event] = _events(sessions=1, per_session=1)
    _send(servicebus_client, [event])
    _wait_until(lambda: ledger.handled == 1, seconds=60)

    # Past the broker's duplicate detection (another message id), not past the inbox.
    again = dataclasses.replace(
        to_message(event, Router(TOPIC)), message_id=f"resent-{uuid.uuid4()}"
    )
    with servicebus_client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(to_sdk_message(again))
    _wait_until(lambda: ledger.duplicates == 1, seconds=60)

    assert ledger.handled == 1
    assert ledger.duplicates == 1
