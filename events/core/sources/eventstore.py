"""Event-sourced streams: one document per event, stream id = partition key.

Document convention::

    {"id": "<streamId>:<version, 10 digits>", "streamId": "payment-7", "version": 3,
     "type": "stream-event", "eventType": "PaymentCaptured", "eventVersion": 1,
     "time": "2026-01-01T12:00:00Z", "data": {...}, "traceparent": "00-..."}

The id makes the database detect concurrent appends: two writers of version 3 create the same
id in the same partition and one gets 409. Only event types with a public contract are
published; the rest stay private to the stream. Event ids derive from (container, stream id,
version), and the version is the CloudEvents ``sequence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from events.core.documents import (
    Document,
    document_id,
    integer,
    mapping,
    optional_str,
    parse_time,
    required_str,
)
from events.core.envelope import IntegrationEvent, deterministic_id, sequence_of
from events.core.sources.base import SourceContext
from events.errors import InvalidDocumentError

__all__ = [
    "STREAM_EVENT_TYPE",
    "EventStoreSource",
    "eventstore_event_id",
    "stream_event_document",
    "stream_event_id",
]

STREAM_EVENT_TYPE: Final = "stream-event"
_VERSION_WIDTH = 10


def stream_event_id(stream_id: str, version: int) -> str:
    return f"{stream_id}:{str(version).zfill(_VERSION_WIDTH)}"


def eventstore_event_id(container: str, stream_id: str, version: int) -> str:
    """The published event id of a stream version: unique per (container, stream, version)."""
    return deterministic_id("eventstore", container, stream_id, str(version))


def stream_event_document(
    *,
    stream_id: str,
    version: int,
    event_type: str,
    data: Mapping[str, Any],
    time: datetime,
    event_version: int = 1,
    traceparent: str | None = None,
) -> dict[str, Any]:
    if version < 1:
        raise ValueError("stream versions start at 1")
    if time.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    document: dict[str, Any] = {
        "id": stream_event_id(stream_id, version),
        "streamId": stream_id,
        "version": version,
        "type": STREAM_EVENT_TYPE,
        "eventType": event_type,
        "eventVersion": event_version,
        "time": time.isoformat(),
        "data": dict(data),
    }
    if traceparent is not None:
        document["traceparent"] = traceparent
    return document


class EventStoreSource:
    kind: Final = "eventstore"

    def claims(self, document: Document) -> bool:
        return document.get("type") == STREAM_EVENT_TYPE

    def to_events(
        self, document: Document, partition_key: str, context: SourceContext
    ) -> list[IntegrationEvent]:
        event_type = required_str(document, "eventType")
        event_version = integer(document, "eventVersion", 1)
        if not context.contracts.knows(event_type):
            return []  # a private event: it stays in the stream
        stream_id = required_str(document, "streamId")
        version = integer(document, "version")
        if version < 1:
            raise InvalidDocumentError("field 'version' must be a positive integer")
        if document_id(document) != stream_event_id(stream_id, version):
            # The id is what makes the database refuse a second writer of the same version;
            # a document breaking the convention could also publish another version's id.
            raise InvalidDocumentError("field 'id' must be '<streamId>:<version, 10 digits>'")
        data = mapping(document, "data")
        contract = context.contracts.get(event_type, event_version)
        return [
            IntegrationEvent(
                id=eventstore_event_id(context.container, stream_id, version),
                source=context.source_uri,
                type=event_type,
                subject=stream_id,
                time=parse_time(document, "time"),
                dataschema=contract.schema_uri(),
                data=contract.public_data(data),
                sequence=sequence_of(version),
                traceparent=optional_str(document, "traceparent"),
                partitionkey=partition_key,
            )
        ]
