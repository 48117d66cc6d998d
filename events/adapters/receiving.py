"""Receiving from Service Bus and settling each message by what handling it did.

The only module importing the azure-servicebus receiving types (``events.adapters.servicebus``
sends). Used by ``python -m events consume``, by the dev stack's demo consumer and by any
receive loop of an application (``settle``, ``receive_until_idle``), so all settle as the
Functions host does, with one difference the SDK allows: a permanent error is dead-lettered at
once instead of after ``maxDeliveryCount`` deliveries.

Settlement (``settlement``):

- handling returned (handled, or a duplicate the inbox recognised): **complete**;
- a ``PermanentError`` (``events.errors``; ``is_transient`` false: ``PayloadMismatchError``, a
  refused unit of work) or, in ``settle``, a message that is no integration event
  (reason ``InvalidEvent``): **dead-letter**, reason the error type, description its message
  (ids only, never a body);
- anything else (a transient error, a bug): **abandon**, so Service Bus redelivers it and
  dead-letters it after the entity's ``maxDeliveryCount``. The rest of the session's batch is
  abandoned too, and the session left: a later event of the aggregate must not be handled
  before the one that failed.

Receivers take the next session with messages (``NEXT_AVAILABLE_SESSION``), handle what it has
and leave it; run ``SessionReceiving.run`` in several threads to serve several sessions at once.
Timing figures of the SDK on loopback are in ``devstack/demo/consumer.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusReceivedMessage,
    ServiceBusReceiver,
)
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from events.core.consumer import Outcome
from events.core.envelope import IntegrationEvent
from events.core.handling import Received, read_event
from events.errors import PermanentError, TransientError, UnreadableMessageError

__all__ = [
    "INVALID_EVENT",
    "SESSION_WAIT_SECONDS",
    "Consumer",
    "SessionReceiving",
    "Settled",
    "Settlement",
    "receive_until_idle",
    "received",
    "settle",
    "settlement",
]

logger = logging.getLogger(__name__)

Settlement = Literal["complete", "abandon", "dead-letter"]

#: How long a receiver waits for a session with messages (sent to the broker as
#: ``com.microsoft:timeout``; it answers "no session" then, OperationTimeoutError).
SESSION_WAIT_SECONDS: Final = 3.0
#: The receive that opens the receiver waits longer than the broker, so the broker answers first.
_FIRST_RECEIVE_SECONDS: Final = SESSION_WAIT_SECONDS + 2.0
_MORE_SECONDS: Final = 0.2
_BATCH: Final = 50
#: Service Bus keeps at most 4096 characters of a dead-letter description.
_DESCRIPTION_LIMIT: Final = 1024
#: The dead-letter reason of a message that is not a readable integration event.
INVALID_EVENT: Final = "InvalidEvent"


class Consumer(Protocol):
    """``IdempotentConsumer`` and ``TransactionalConsumer`` both are one."""

    name: str

    def handle(self, event: IntegrationEvent) -> Outcome: ...


@dataclass(frozen=True)
class Settled:
    """What ``settle`` did with one message."""

    message_id: str
    settlement: Settlement
    event_id: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None


def settlement(error: BaseException | None) -> Settlement:
    """What to do with a message whose handling raised ``error`` (None: it returned)."""
    if error is None:
        return "complete"
    if isinstance(error, PermanentError):
        return "dead-letter"
    return "abandon"


def _apply(
    receiver: ServiceBusReceiver,
    message: ServiceBusReceivedMessage,
    action: Settlement,
    error: BaseException | None,
    *,
    where: str,
    reason: str | None = None,
) -> None:
    """Settle ``message`` as ``action`` says; log a dead-letter (WARNING) or abandon (INFO)."""
    if action == "complete":
        receiver.complete_message(message)
        return
    message_id = str(message.message_id)
    why = reason if reason is not None else type(error).__name__
    if action == "dead-letter":
        logger.warning(
            "message dead-lettered entity=%s message_id=%s reason=%s",
            where,
            message_id,
            why,
            extra={"message_id": message_id},
        )
        receiver.dead_letter_message(
            message, reason=why, error_description=str(error)[:_DESCRIPTION_LIMIT]
        )
        return
    logger.info(
        "message abandoned entity=%s message_id=%s delivery=%s: %s",
        where,
        message_id,
        message.delivery_count,
        why,
        extra={"message_id": message_id},
    )
    receiver.abandon_message(message)


def settle(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, consumer: Consumer
) -> Settled:
    """Read the event, hand it to the consumer, settle the message by the result."""
    message_id = str(message.message_id)
    try:
        event = read_event(received(message))
    except UnreadableMessageError as exc:
        _apply(receiver, message, "dead-letter", exc, where=consumer.name, reason=INVALID_EVENT)
        return Settled(message_id, "dead-letter", None, reason=INVALID_EVENT)
    try:
        outcome = consumer.handle(event)
    except Exception as exc:
        action = settlement(exc)
        if action == "abandon" and not isinstance(exc, PermanentError | TransientError):
            logger.exception(
                "handler failed consumer=%s event=%s message=%s: abandoned for redelivery",
                consumer.name,
                event.id,
                message_id,
                extra={"event_id": event.id, "message_id": message_id},
            )
        _apply(receiver, message, action, exc, where=consumer.name)
        return Settled(message_id, action, event.id, reason=type(exc).__name__)
    _apply(receiver, message, "complete", None, where=consumer.name)
    return Settled(message_id, "complete", event.id, outcome)


def receive_until_idle(
    receiver: ServiceBusReceiver,
    consumer: Consumer,
    *,
    batch: int = 10,
    wait_seconds: float = 1.0,
    stop: threading.Event | None = None,
    on_settled: Callable[[Settled], None] = lambda settled: None,
) -> list[Settled]:
    """Receive and ``settle`` until a receive comes back empty (or ``stop`` is set)."""
    settled: list[Settled] = []
    while stop is None or not stop.is_set():
        messages = receiver.receive_messages(max_message_count=batch, max_wait_time=wait_seconds)
        if not messages:
            break
        for message in messages:
            result = settle(receiver, message, consumer)
            settled.append(result)
            on_settled(result)
    return settled


def received(message: ServiceBusReceivedMessage) -> Received:
    """The SDK's received message as the consumers read it."""
    return Received(
        message_id=str(message.message_id),
        body=b"".join(message.body),
        application_properties=dict(message.application_properties or {}),
        content_type=message.content_type,
        delivery_count=message.delivery_count,
    )


class SessionReceiving:
    """Session receivers on one topic subscription (or, with ``subscription=None``, a queue)."""

    def __init__(
        self,
        client: ServiceBusClient,
        entity: str,
        subscription: str | None = None,
        *,
        session_wait: float = SESSION_WAIT_SECONDS,
    ) -> None:
        self._client = client
        self._entity = entity
        self._subscription = subscription
        self._session_wait = session_wait
        self.where = entity if subscription is None else f"{entity}/{subscription}"

    def _receiver(self) -> ServiceBusReceiver:
        if self._subscription is None:
            return self._client.get_queue_receiver(
                self._entity, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=self._session_wait
            )
        return self._client.get_subscription_receiver(
            self._entity,
            self._subscription,
            session_id=NEXT_AVAILABLE_SESSION,
            max_wait_time=self._session_wait,
        )

    def run(
        self,
        handle: Callable[[Received], object],
        stop: threading.Event,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Receive session after session until ``stop`` is set; ``handle`` each message and
        settle it. ``on_error`` hears of connection errors (the loop reconnects)."""
        closing: list[threading.Thread] = []
        try:
            while not stop.is_set():
                closing = [t for t in closing if t.is_alive()]
                receiver = self._receiver()
                try:
                    self._visit(receiver, handle)
                except OperationTimeoutError:
                    pass  # no session had messages within the session wait
                except ServiceBusError as exc:
                    if not stop.is_set():
                        if on_error is not None:
                            on_error(exc)
                        stop.wait(0.5)
                finally:
                    # The link closes at once; only the SDK's wait for its keep-alive thread
                    # is left, and the next session need not wait for it.
                    closer = threading.Thread(target=receiver.close, daemon=True)
                    closer.start()
                    closing.append(closer)
        finally:
            for closer in closing:
                closer.join(timeout=5)

    def _visit(self, receiver: ServiceBusReceiver, handle: Callable[[Received], object]) -> None:
        """Take the next session with messages, handle what it has, and leave it."""
        batch = receiver.receive_messages(
            max_message_count=_BATCH, max_wait_time=_FIRST_RECEIVE_SECONDS
        )
        while batch:
            for index, message in enumerate(batch):
                if not self._settle(receiver, message, handle):
                    for rest in batch[index + 1 :]:
                        receiver.abandon_message(rest)
                    return  # leave the session: its next event waits for the failed one
            if len(batch) < _BATCH:
                # A short batch: the session is empty for now; leave it to any receiver.
                return
            batch = receiver.receive_messages(max_message_count=_BATCH, max_wait_time=_MORE_SECONDS)

    def _settle(
        self,
        receiver: ServiceBusReceiver,
        message: ServiceBusReceivedMessage,
        handle: Callable[[Received], object],
    ) -> bool:
        """Handle and settle one message; False when it was abandoned."""
        error: BaseException | None = None
        try:
            handle(received(message))
        except Exception as exc:  # noqa: BLE001 - settled by its kind below
            error = exc
        action = settlement(error)
        _apply(receiver, message, action, error, where=self.where)
        return action != "abandon"
