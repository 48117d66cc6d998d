"""The declared consumers: one place that builds the consumer helper from the declaration and
turns a received message into a handled event.

Both hosts use it: the Functions app (one Service Bus trigger per consumer,
``events.hosts.functions``) and ``python -m events consume`` (session receivers,
``events.adapters.receiving``). Hosts see a consumer only as ``Consumer.handle(event) ->
Outcome``; ``build_consumer`` is where a declaration's ``mode`` picks the helper.

Errors of one message, and what the hosts do with them:

- the message is not an integration event (``UnreadableMessageError``, permanent), or the
  handler raised a permanent error: logged as an ERROR naming the consumer and message id;
  the Functions host abandons the message (the exception propagates) and Service Bus
  dead-letters it after the subscription's ``maxDeliveryCount``; the local receiver
  dead-letters it at once;
- a transient error (Cosmos DB or the broker unavailable): the message is abandoned and
  redelivered;
- anything else (a bug in a handler): treated as transient, so a fix deployed within
  ``maxDeliveryCount`` deliveries loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from events.core.consumer import IdempotentConsumer, Inbox, Outcome
from events.core.envelope import IntegrationEvent
from events.core.handling import ConsumerStore, Received, read_event
from events.core.inbox import TransactionalConsumer, TransactionalInbox, UnitOfWork
from events.deployment.catalog import ConsumerDefinition
from events.errors import PermanentError, SettingsError, UnreadableMessageError

__all__ = [
    "Consumer",
    "Received",
    "UnreadableMessageError",
    "build_consumer",
    "consume",
    "is_permanent",
]

logger = logging.getLogger(__name__)


class Consumer(Protocol):
    """What hosts need of a consumer helper (idempotent or transactional)."""

    @property
    def name(self) -> str: ...

    def handle(self, event: IntegrationEvent) -> Outcome: ...


def build_consumer(
    definition: ConsumerDefinition,
    inbox: Inbox | None,
    store: ConsumerStore,
    transactional: TransactionalInbox | None = None,
) -> Consumer:
    """The helper the declaration's ``mode`` asks for, calling its handler with the documents
    of the event's partition of the consumer's container.

    ``idempotent``: ``IdempotentConsumer`` on the shared ``inbox``, the handler's upserts
    written one by one to ``store``. ``transactional``: ``TransactionalConsumer`` on
    ``transactional`` (the consumer's own container), the handler's upserts committed with the
    inbox record in one transactional batch."""
    handler = definition.handler
    if definition.mode == "transactional":
        if transactional is None:
            raise SettingsError(
                f"consumer {definition.name!r}: mode 'transactional' needs its container "
                f"{definition.container!r} as a transactional inbox",
                ids={"consumer": definition.name},
            )
        field = definition.partition_key_path.strip("/")
        return TransactionalConsumer(
            definition.name,
            transactional,
            lambda event, work: handler(event, _WorkDocuments(work, field)),
        )
    if inbox is None:
        raise SettingsError(
            f"consumer {definition.name!r}: mode 'idempotent' needs the inbox container "
            "(role 'inbox') in the declaration",
            ids={"consumer": definition.name},
        )
    return IdempotentConsumer(
        definition.name,
        inbox,
        lambda event: handler(event, store.partition(event.partitionkey)),
    )


class _WorkDocuments:
    """A unit of work seen as a handler's ``Documents``: reads what is committed, collects
    upserts with the partition key field set to the unit of work's partition."""

    def __init__(self, work: UnitOfWork, field: str) -> None:
        self._work = work
        self._field = field

    def read(self, document_id: str) -> dict[str, Any] | None:
        return self._work.read(document_id)

    def upsert(self, document: Mapping[str, Any]) -> None:
        self._work.upsert({**document, self._field: self._work.partition_key})


def is_permanent(error: BaseException) -> bool:
    """True when redelivering the message cannot help (dead-letter it)."""
    return isinstance(error, PermanentError)


def consume(consumer: Consumer, message: Received) -> Outcome:
    """Read the event from ``message`` and hand it to ``consumer``: one INFO line with the
    consumer, message and event ids (never the body); an ERROR on a permanent error. Raises
    what failed, for the host to settle the message."""
    try:
        event = read_event(message)
        outcome = consumer.handle(event)
    except Exception as exc:
        if is_permanent(exc):
            logger.error(
                "message refused consumer=%s message_id=%s delivery=%s: %s: %s; "
                "it is dead-lettered",
                consumer.name,
                message.message_id,
                message.delivery_count,
                type(exc).__name__,
                exc,
                extra={"consumer": consumer.name, "message_id": message.message_id},
            )
        raise
    logger.info(
        "message consumed consumer=%s event_id=%s type=%s outcome=%s delivery=%s",
        consumer.name,
        event.id,
        event.type,
        "duplicate" if outcome.duplicate else "handled",
        message.delivery_count,
        extra={"consumer": consumer.name, "event_id": event.id, "message_id": message.message_id},
    )
    return outcome
