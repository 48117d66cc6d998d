"""Event store adapter: append to a stream with an expected version, read a stream back.

Concurrency is decided by the database, not by a read-then-write: the new events are created
in one transactional batch with ids ``<stream>:<version>``; a concurrent writer that appended
the same versions first makes the create fail with 409 and nothing of this append is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosBatchOperationError

from events.adapters.cosmos.errors import batch_error, translate_cosmos_errors
from events.adapters.cosmos.outbox import MAX_BATCH_OPERATIONS
from events.core.sources.eventstore import stream_event_document
from events.core.telemetry import current_traceparent
from events.errors import (
    RelayError,
)

__all__ = ["EventStore", "NewEvent", "StoredEvent"]


@dataclass(frozen=True)
class NewEvent:
    event_type: str
    data: Mapping[str, Any]
    event_version: int = 1
    traceparent: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    stream_id: str
    version: int
    event_type: str
    data: Mapping[str, Any]


class EventStore:
    def __init__(
        self,
        container: ContainerProxy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._container = container
        self._clock = clock

    def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> int:
        """Append after ``expected_version`` (0 for a new stream); return the new version.

        Raises ConcurrencyConflictError when the stream moved past ``expected_version``.
        """
        if expected_version < 0:
            raise ValueError("expected_version cannot be negative")
        if not events:
            return expected_version
        if len(events) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"at most {MAX_BATCH_OPERATIONS} events per append")
        now = self._clock()
        ambient = current_traceparent()  # unless an event names its own (see OutboxEvent)
        operations = [
            (
                "create",
                (
                    stream_event_document(
                        stream_id=stream_id,
                        version=expected_version + offset,
                        event_type=event.event_type,
                        data=event.data,
                        time=now,
                        event_version=event.event_version,
                        traceparent=event.traceparent or ambient,
                    ),
                ),
            )
            for offset, event in enumerate(events, start=1)
        ]
        try:
            with translate_cosmos_errors("event store append"):
                self._container.execute_item_batch(
                    batch_operations=operations, partition_key=stream_id
                )
        except CosmosBatchOperationError as exc:
            raise _append_error(exc, stream_id, expected_version) from exc
        return expected_version + len(events)

    def read(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        with translate_cosmos_errors("event store read"):
            items = self._container.query_items(
                "SELECT * FROM c WHERE c.streamId = @s AND c.version > @v ORDER BY c.version",
                parameters=[
                    {"name": "@s", "value": stream_id},
                    {"name": "@v", "value": after_version},
                ],
                partition_key=stream_id,
            )
            return [
                StoredEvent(
                    stream_id=item["streamId"],
                    version=item["version"],
                    event_type=item["eventType"],
                    data=item["data"],
                )
                for item in items
            ]


def _append_error(
    exc: CosmosBatchOperationError, stream_id: str, expected_version: int
) -> RelayError:
    if exc.status_code == 409:
        message = f"stream {stream_id} is past version {expected_version}; reload and decide again"
    else:
        message = f"event store append: Cosmos DB answered {exc.status_code}"
    return batch_error("eventstore", exc, message, ids={"stream": stream_id})
