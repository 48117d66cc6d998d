"""Settlement through real azure-servicebus session receivers on the local broker
(events.adapters.receiving): complete, dead-letter at once on a permanent error, abandon on a
transient one and leave the session, so a later event of the aggregate never overtakes it."""

from __future__ import annotations

import threading
import time

import pytest
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusSubQueue,
)

from events.adapters.receiving import SessionReceiving
from events.core.handling import Received
from events.errors import InvalidDocumentError, StoreUnavailableError

pytestmark = pytest.mark.integration

TOPIC, SUBSCRIPTION = "integration-events", "all"
#: Bound on each wait for the receivers (they poll sessions every second or so).
WAIT_SECONDS = 30.0


def _send(client: ServiceBusClient, session: str, *ids: str) -> None:
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(
            [ServiceBusMessage(b"{}", message_id=i, session_id=session) for i in ids]
        )


def _run(client: ServiceBusClient, handle: HandleLog, until: threading.Event) -> threading.Thread:
    receiving = SessionReceiving(client, TOPIC, SUBSCRIPTION, session_wait=1.0)
    thread = threading.Thread(target=receiving.run, args=(handle, until), daemon=True)
    thread.start()
    return thread


class HandleLog:
    """A handler that records message ids and fails as told, per message id and attempt."""

    def __init__(self, failures: dict[str, list[Exception]]) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.done = threading.Event()
        self.expected: list[str] = []

    def __call__(self, message: Received) -> None:
        self.calls.append(message.message_id)
        pending = self.failures.get(message.message_id)
        if pending:
            raise pending.pop(0)
        if self.expected and all(i in self.calls for i in self.expected):
            self.done.set()


def test_session_receiving_transient_failure_abandons_and_keeps_the_session_order(
    servicebus_client: ServiceBusClient,
) -> None:
    handle = HandleLog({"m-1": [StoreUnavailableError("503")]})
    handle.expected = ["m-2"]
    _send(servicebus_client, "order-1", "m-1", "m-2")
    stop = threading.Event()
    thread = _run(servicebus_client, handle, stop)

    assert handle.done.wait(WAIT_SECONDS)
    stop.set()
    thread.join(WAIT_SECONDS)

    # m-2 was received with m-1 but abandoned unhandled; it is handled only after m-1.
    assert handle.calls == ["m-1", "m-1", "m-2"]


def test_session_receiving_permanent_failure_dead_letters_at_once(
    servicebus_client: ServiceBusClient,
) -> None:
    handle = HandleLog({"m-bad": [InvalidDocumentError("not an event")]})
    handle.expected = ["m-next"]
    _send(servicebus_client, "order-2", "m-bad", "m-next")
    stop = threading.Event()
    thread = _run(servicebus_client, handle, stop)

    assert handle.done.wait(WAIT_SECONDS)
    stop.set()
    thread.join(WAIT_SECONDS)

    assert handle.calls == ["m-bad", "m-next"]
    with servicebus_client.get_subscription_receiver(
        TOPIC, SUBSCRIPTION, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5
    ) as dead:
        deadline = time.monotonic() + WAIT_SECONDS
        lettered: list[ServiceBusReceivedMessage] = []
        while not lettered and time.monotonic() < deadline:
            lettered = dead.receive_messages(max_message_count=10, max_wait_time=2)
        assert [str(m.message_id) for m in lettered] == ["m-bad"]
        assert lettered[0].dead_letter_reason == "InvalidDocumentError"
        assert lettered[0].dead_letter_error_description == "not an event"
