"""Settling received Service Bus messages by what the consumer made of them.

One place for the receiving rule, whichever consumer mode handles the events:

- handled, duplicate or late: **complete** (the work is recorded, or was before);
- a permanent error (``PayloadMismatchError``, a refused unit of work, a message that is no
  integration event): **dead-letter** with the error's type as reason and its message as
  description: retrying cannot help, an operator must look;
- a transient error (``EventInProgressError``, ``InboxConflictError``, a store outage) or a
  handler's own exception: **abandon**: Service Bus redelivers it, and dead-letters it after
  the entity's max delivery count.

Only this module and ``events.adapters.servicebus`` import azure.servicebus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiver

from events.core.consumer import Outcome
from events.core.envelope import IntegrationEvent
from events.core.messages import event_from_message
from events.errors import RelayError

__all__ = ["Consumer", "Settled", "Settlement", "receive_until_idle", "settle"]

logger = logging.getLogger(__name__)

#: Service Bus keeps at most 4096 characters of a dead-letter description.
_DESCRIPTION_LIMIT: Final = 1024
#: The dead-letter reason of a message that is not a readable integration event.
INVALID_EVENT: Final = "InvalidEvent"


class Consumer(Protocol):
    """``IdempotentConsumer`` and ``TransactionalConsumer`` both are one."""

    name: str

    def handle(self, event: IntegrationEvent) -> Outcome: ...


class Settlement(Enum):
    COMPLETED = "completed"
    DEAD_LETTERED = "dead-lettered"
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class Settled:
    message_id: str
    settlement: Settlement
    event_id: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None


def settle(
    receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, consumer: Consumer
) -> Settled:
    """Read the event, hand it to the consumer, settle the message by the result."""
    message_id = str(message.message_id)
    try:
        event = event_from_message(
            b"".join(message.body), message.application_properties or {}, message.content_type
        )
    except ValueError as exc:  # bad JSON or a failed validation: both are ValueErrors
        return _dead_letter(
            receiver, message, consumer, None, reason=INVALID_EVENT, description=str(exc)
        )
    try:
        outcome = consumer.handle(event)
    except RelayError as exc:
        if exc.transient:
            return _abandon(receiver, message, consumer, event.id, type(exc).__name__)
        return _dead_letter(
            receiver,
            message,
            consumer,
            event.id,
            reason=type(exc).__name__,
            description=str(exc),
        )
    except Exception as exc:
        logger.exception(
            "handler failed consumer=%s event=%s message=%s: abandoned for redelivery",
            consumer.name,
            event.id,
            message_id,
            extra={"event_id": event.id, "message_id": message_id},
        )
        return _abandon(receiver, message, consumer, event.id, type(exc).__name__, logged=True)
    receiver.complete_message(message)
    return Settled(message_id, Settlement.COMPLETED, event.id, outcome)


def _dead_letter(
    receiver: ServiceBusReceiver,
    message: ServiceBusReceivedMessage,
    consumer: Consumer,
    event_id: str | None,
    *,
    reason: str,
    description: str,
) -> Settled:
    message_id = str(message.message_id)
    logger.warning(
        "dead-lettered consumer=%s event=%s message=%s reason=%s",
        consumer.name,
        event_id,
        message_id,
        reason,
        extra={"event_id": event_id, "message_id": message_id},
    )
    receiver.dead_letter_message(
        message, reason=reason, error_description=description[:_DESCRIPTION_LIMIT]
    )
    return Settled(message_id, Settlement.DEAD_LETTERED, event_id, reason=reason)


def _abandon(
    receiver: ServiceBusReceiver,
    message: ServiceBusReceivedMessage,
    consumer: Consumer,
    event_id: str,
    reason: str,
    *,
    logged: bool = False,
) -> Settled:
    message_id = str(message.message_id)
    if not logged:
        logger.info(
            "abandoned consumer=%s event=%s message=%s reason=%s: redelivered later",
            consumer.name,
            event_id,
            message_id,
            reason,
            extra={"event_id": event_id, "message_id": message_id},
        )
    receiver.abandon_message(message)
    return Settled(message_id, Settlement.ABANDONED, event_id, reason=reason)


def receive_until_idle(
    receiver: ServiceBusReceiver,
    consumer: Consumer,
    *,
    batch: int = 10,
    wait_seconds: float = 1.0,
    stop: threading.Event | None = None,
    on_settled: Callable[[Settled], None] = lambda settled: None,
) -> list[Settled]:
    """Receive and settle until a receive comes back empty (or ``stop`` is set)."""
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
