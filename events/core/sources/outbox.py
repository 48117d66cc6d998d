"""Transactional outbox documents: written with their entity in one batch, insert-only.

Document convention (one per event, same partition key as the entity)::

    {"id": "<event id>", "partitionKey": "<entity partition key>", "type": "outbox",
     "eventType": "OrderPlaced", "eventVersion": 1, "subject": "<aggregate id>",
     "time": "2026-01-01T12:00:00Z", "data": {...}, "traceparent": "00-...", "ttl": 864000}

The published event id derives from (container, partition key, document id): Cosmos DB keeps
ids unique per partition key value only, so the derived id is unique per container whatever id
the application chose (``OutboxWriter.save`` returns the derived ids).

Outbox documents are never updated (an update would put them in the change feed again) and
expire by TTL, which bounds how long an outage may last without loss.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from events.core.contracts import EventPayload
from events.core.documents import (
    Document,
    document_id,
    document_lsn,
    integer,
    mapping,
    optional_str,
    parse_time,
    required_str,
)
from events.core.envelope import IntegrationEvent, deterministic_id, sequence_of
from events.core.sources.base import SourceContext

__all__ = ["OUTBOX_TYPE", "OutboxSource", "outbox_document", "outbox_event_id"]

OUTBOX_TYPE: Final = "outbox"


def outbox_event_id(container: str, partition_key: str, document_id: str) -> str:
    """The published event id of an outbox document: unique per (container, partition, id)."""
    return deterministic_id("outbox", container, partition_key, document_id)


def outbox_document(
    *,
    event_id: str,
    partition_key_field: str,
    partition_key: str,
    payload: EventPayload,
    subject: str,
    time: datetime,
    ttl_seconds: int,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """Build the outbox document for one event (the writer's half of the convention)."""
    if time.tzinfo is None:
        raise ValueError("outbox event time must be timezone-aware")
    document: dict[str, Any] = {
        "id": event_id,
        partition_key_field: partition_key,
        "type": OUTBOX_TYPE,
        "eventType": payload.event_type,
        "eventVersion": payload.version,
        "subject": subject,
        "time": time.isoformat(),
        "data": payload.model_dump(mode="json", by_alias=True),
        "ttl": ttl_seconds,
    }
    if traceparent is not None:
        document["traceparent"] = traceparent
    return document


class OutboxSource:
    kind: Final = "outbox"

    def claims(self, document: Document) -> bool:
        return document.get("type") == OUTBOX_TYPE

    def to_events(
        self, document: Document, partition_key: str, context: SourceContext
    ) -> list[IntegrationEvent]:
        event_type = required_str(document, "eventType")
        data = mapping(document, "data")
        contract = context.contracts.get(event_type, integer(document, "eventVersion", 1))
        return [
            IntegrationEvent(
                id=outbox_event_id(context.container, partition_key, document_id(document)),
                source=context.source_uri,
                type=event_type,
                subject=required_str(document, "subject"),
                time=parse_time(document, "time"),
                dataschema=contract.schema_uri(),
                data=contract.public_data(data),
                sequence=sequence_of(document_lsn(document)),
                traceparent=optional_str(document, "traceparent"),
                partitionkey=partition_key,
            )
        ]
