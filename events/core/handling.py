"""What a declared consumer's handler is given: the event and the documents of one partition.

A handler declared in the topology (``serviceBus.consumers[].handler``) is called as
``handler(event, documents)``. ``documents`` is the consumer's own container, scoped to the
event's partition key value (the aggregate): ``read`` a document by id, ``upsert`` one. The
store sets the partition key field itself, so a handler never writes into another partition.
This is the subset of the transactional inbox's unit of work that a projection needs, so one
handler runs unchanged in either consumer mode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from events.core.envelope import IntegrationEvent
from events.core.messages import event_from_message
from events.errors import UnreadableMessageError

__all__ = [
    "ConsumerStore",
    "Documents",
    "Handler",
    "InMemoryConsumerStore",
    "Received",
    "read_event",
]


@dataclass(frozen=True)
class Received:
    """A received message as every host hands it over (the Functions trigger's
    ``ServiceBusMessage``, an SDK receiver's message): what ``event_from_message`` reads, and
    the ids to log."""

    message_id: str
    body: bytes
    application_properties: Mapping[str | bytes, object]
    content_type: str | None
    delivery_count: int | None = None


def read_event(message: Received) -> IntegrationEvent:
    """The integration event a received message carries; ``UnreadableMessageError`` (permanent)
    when it carries none. The error names the message id and the invalid fields, never their
    values."""
    try:
        return event_from_message(
            message.body, message.application_properties, message.content_type
        )
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        # ValidationError's text quotes input values; only its locations are kept.
        detail = (
            ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            if isinstance(exc, ValidationError)
            else type(exc).__name__
        )
        raise UnreadableMessageError(
            f"message {message.message_id} is not an integration event ({detail})",
            ids={"message": message.message_id},
        ) from None


class Documents(Protocol):
    """The documents of one partition key value of a consumer's container."""

    def read(self, document_id: str) -> dict[str, Any] | None: ...

    def upsert(self, document: Mapping[str, Any]) -> None: ...


#: A declared consumer's handler.
Handler = Callable[[IntegrationEvent, Documents], None]


class ConsumerStore(Protocol):
    """A consumer's container: ``partition(value)`` gives the documents of one value."""

    def partition(self, value: str) -> Documents: ...


class _InMemoryPartition:
    def __init__(self, documents: dict[str, dict[str, Any]], field: str, value: str) -> None:
        self._documents = documents
        self._field = field
        self._value = value

    def read(self, document_id: str) -> dict[str, Any] | None:
        found = self._documents.get(document_id)
        return copy.deepcopy(found) if found is not None else None

    def upsert(self, document: Mapping[str, Any]) -> None:
        stored = copy.deepcopy(dict(document))
        stored[self._field] = self._value
        self._documents[str(stored["id"])] = stored


class InMemoryConsumerStore:
    """A real in-memory container: documents by (partition key value, id)."""

    def __init__(self, partition_key_path: str = "/partitionKey") -> None:
        self._field = partition_key_path.lstrip("/")
        self.partitions: dict[str, dict[str, dict[str, Any]]] = {}

    def partition(self, value: str) -> Documents:
        return _InMemoryPartition(self.partitions.setdefault(value, {}), self._field, value)
