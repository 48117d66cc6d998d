"""Order and gaps per stream: the last ``sequence`` a consumer handled per (source, partition key).

Every event carries ``source``, ``partitionkey`` and, from the relay's sources, ``sequence``:
the document's LSN (outbox, CDC: increasing, not contiguous) or the stream version (event
store: contiguous). Service Bus sessions keep one partition key in order, but a replay, a
dead-letter re-submission or a consumer without sessions can deliver an older event after a
newer one. A consumer compares each event with the position it keeps:

- ``first``: no position yet; ``next``: equal to the position, one more, or higher where
  the stream is not contiguous;
- ``late``: below the position: an older event than one already handled (skipped by
  default, logged as a WARNING with ids). Equal is not late: the documents of one
  transactional batch share one LSN, so an outbox event and its entity's CDC event carry the
  same sequence;
- ``gap``: higher than the position plus one on a contiguous stream: events are missing in
  between (reported, then handled). A stream whose private events are never published has
  such gaps by design: declare it contiguous only when every version is published.

Events without a numeric ``sequence`` are not ordered. The positions are kept by the inbox
stores (see ``events.core.consumer`` and ``events.core.inbox`` for what is durable when).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from events.core.envelope import IntegrationEvent, deterministic_id

__all__ = [
    "Arrival",
    "GapReport",
    "OrderPolicy",
    "Position",
    "arrival_of",
    "position_id",
    "sequence_number",
]

logger = logging.getLogger(__name__)

#: ``kind`` of a position document, next to inbox records in the same container.
POSITION_KIND: Final = "position"


class Arrival(Enum):
    FIRST = "first"
    NEXT = "next"
    GAP = "gap"
    LATE = "late"


@dataclass(frozen=True)
class Position:
    """The last sequence handled on one stream; ``version`` is the store's etag (or counter)."""

    source: str
    partition_key: str
    sequence: int
    version: str | None = None


@dataclass(frozen=True)
class GapReport:
    consumer: str
    event_id: str
    source: str
    partition_key: str
    last: int
    sequence: int

    @property
    def missing(self) -> int:
        return self.sequence - self.last - 1


def _log_gap(report: GapReport) -> None:
    logger.warning(
        "gap consumer=%s event=%s source=%s partitionkey=%s last=%d sequence=%d missing=%d",
        report.consumer,
        report.event_id,
        report.source,
        report.partition_key,
        report.last,
        report.sequence,
        report.missing,
        extra={"event_id": report.event_id, "partition_key": report.partition_key},
    )


@dataclass(frozen=True)
class OrderPolicy:
    """What a consumer does with order.

    ``contiguous_sources``: sources whose sequences are contiguous versions (event-store
    streams), where a jump reports a gap. ``handle_late``: run the handler for a late event
    anyway (the outcome still says ``late``). ``on_gap``: called before a gapped event is
    handled (default: a WARNING with ids).
    """

    contiguous_sources: Collection[str] = frozenset()
    handle_late: bool = False
    on_gap: Callable[[GapReport], None] = field(default=_log_gap)

    def contiguous(self, event: IntegrationEvent) -> bool:
        return event.source in self.contiguous_sources


def sequence_number(event: IntegrationEvent) -> int | None:
    """The event's ``sequence`` as a number, or None when it has none or it is not decimal."""
    value = event.sequence
    if value is None or not value.isascii() or not value.isdecimal():
        return None
    return int(value)


def arrival_of(last: Position | None, sequence: int, *, contiguous: bool) -> Arrival:
    if last is None:
        return Arrival.FIRST
    if sequence < last.sequence:
        return Arrival.LATE
    if contiguous and sequence > last.sequence + 1:
        return Arrival.GAP
    return Arrival.NEXT


def position_id(consumer: str, source: str, partition_key: str) -> str:
    """The id of a consumer's position document for one stream (fits any Cosmos DB id)."""
    return f"position-{deterministic_id(consumer, source, partition_key)}"
