"""The application-side outbox writer: an entity and its events in ONE transactional batch.

Either the entity change and every event document are written, or nothing is. Limits of a
Cosmos DB transactional batch are checked before the round trip so the error is clear:
one logical partition, at most 100 operations, at most 2 MB
(https://learn.microsoft.com/azure/cosmos-db/nosql/transactional-batch).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosBatchOperationError

from events.adapters.cosmos.errors import TRANSIENT_STATUS, batch_error, translate_cosmos_errors
from events.core.contracts import EventPayload
from events.core.documents import partition_key_value
from events.core.sources.outbox import outbox_document, outbox_event_id
from events.core.telemetry import current_traceparent
from events.errors import (
    InvalidDocumentError,
    OutboxError,
    OutboxTooLargeError,
    OutboxTooManyOperationsError,
    PartitionKeyMismatchError,
    RelayError,
)

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_OPERATIONS", "OutboxEvent", "OutboxWriter"]

MAX_BATCH_OPERATIONS: Final = 100
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
DEFAULT_OUTBOX_TTL: Final = 864_000  # 10 days: how long an outage may last without loss


@dataclass(frozen=True)
class OutboxEvent:
    """One event to record with an entity change. ``partition_key`` defaults to the entity's.

    ``event_id`` is the outbox document's id (a random UUID unless given). The published
    CloudEvents id derives from (container, partition key, ``event_id``), which Cosmos DB keeps
    unique within a container; ``OutboxWriter.save`` returns the published ids.
    """

    payload: EventPayload
    subject: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime | None = None
    traceparent: str | None = None
    partition_key: str | None = None


class OutboxWriter:
    def __init__(
        self,
        container: ContainerProxy,
        *,
        partition_key_path: str = "/partitionKey",
        ttl_seconds: int = DEFAULT_OUTBOX_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if partition_key_path.count("/") != 1:
            raise ValueError("the outbox writer supports a top-level partition key path")
        self._container = container
        self._pk_path = partition_key_path
        self._pk_field = partition_key_path.strip("/")
        self._ttl = ttl_seconds
        self._clock = clock

    def save(
        self,
        entity: Mapping[str, Any],
        events: Sequence[OutboxEvent],
        *,
        if_match_etag: str | None = None,
    ) -> list[str]:
        """Upsert the entity (or replace it if its etag still matches) and insert the events.

        Returns the published event ids, in order. Raises an OutboxError subclass when the
        batch is refused, or StoreUnavailableError when Cosmos DB is throttling or unavailable
        (retry later).
        """
        try:
            partition_key = partition_key_value(entity, self._pk_path)
        except InvalidDocumentError as exc:
            raise OutboxError(f"entity: {exc}") from None
        entity_id = entity.get("id")
        if not isinstance(entity_id, str) or not entity_id:
            raise OutboxError("entity has no string 'id'")
        operations: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        if if_match_etag is None:
            operations.append(("upsert", (dict(entity),), {}))
        else:
            operations.append(
                ("replace", (entity_id, dict(entity)), {"if_match_etag": if_match_etag})
            )
        now = self._clock()
        # The application's current span, when it has one, unless an event names its own.
        ambient = current_traceparent()
        for event in events:
            if event.partition_key is not None and event.partition_key != partition_key:
                raise PartitionKeyMismatchError(
                    f"event {event.event_id} has partition key {event.partition_key!r}, "
                    f"its entity {partition_key!r}: one batch holds one logical partition",
                    ids={"event": event.event_id, "entity": entity_id},
                )
            document = outbox_document(
                event_id=event.event_id,
                partition_key_field=self._pk_field,
                partition_key=partition_key,
                payload=event.payload,
                subject=event.subject,
                time=_utc(event, now),
                ttl_seconds=self._ttl,
                traceparent=event.traceparent or ambient,
            )
            operations.append(("create", (document,), {}))
        self._check_limits(operations)
        try:
            with translate_cosmos_errors("outbox write"):
                self._container.execute_item_batch(
                    batch_operations=operations, partition_key=partition_key
                )
        except CosmosBatchOperationError as exc:
            raise _batch_error(exc, entity_id) from exc
        return [outbox_event_id(self._container.id, partition_key, e.event_id) for e in events]

    @staticmethod
    def _check_limits(operations: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise OutboxTooManyOperationsError(
                f"{len(operations)} operations; a transactional batch holds at most "
                f"{MAX_BATCH_OPERATIONS} (the entity counts as one)",
                size=len(operations),
                limit=MAX_BATCH_OPERATIONS,
            )
        size = sum(len(json.dumps(args[-1], separators=(",", ":"))) for _, args, _ in operations)
        if size > MAX_BATCH_BYTES:
            raise OutboxTooLargeError(
                f"the batch is {size} bytes; a transactional batch holds at most {MAX_BATCH_BYTES}",
                size=size,
                limit=MAX_BATCH_BYTES,
            )


def _utc(event: OutboxEvent, default: datetime) -> datetime:
    """The event time in UTC; refused here when it has no zone or no UTC equivalent (a time
    such as 0001-01-01T00:00:00+01:00 overflows), instead of being quarantined by the relay."""
    moment = event.time or default
    if moment.tzinfo is None:
        raise OutboxError(f"event {event.event_id}: time has no time zone offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise OutboxError(f"event {event.event_id}: time is out of range in UTC") from None


def _batch_error(exc: CosmosBatchOperationError, entity_id: str) -> RelayError:
    status = exc.status_code
    index = exc.error_index
    what = "the entity" if index == 0 else f"event #{index}" if index is not None else "an item"
    messages = {
        409: f"{what} already exists (entity {entity_id}); nothing written",
        412: f"entity {entity_id} changed since it was read (etag); nothing written",
        413: f"{what} is too large for Cosmos DB; nothing written",
    }
    message = messages.get(status or 0, f"transactional batch failed with {status} at {what}")
    if status in TRANSIENT_STATUS:
        message = f"outbox write: Cosmos DB answered {status}; retry later"
    return batch_error("outbox", exc, message, ids={"entity": entity_id})
