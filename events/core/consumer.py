"""The idempotent consumer helper: handle each integration event once per consumer.

Service Bus delivers at least once, and duplicate detection only covers its window, so a
consumer must recognise a redelivered event itself. This helper is for handlers whose effects
live elsewhere (an e-mail, a call to another service): it cannot commit them with its record,
so it works in three steps against an ``Inbox``:

1. **claim** the event id: an in-progress record with the event's payload hash and a claim
   expiry. A live claim of another delivery refuses this one (``EventInProgressError``,
   transient: abandon, it comes back). A claim whose expiry passed (its consumer crashed) is
   taken over: the handler runs again, never twice at the same time.
2. **handle**: the handler runs; on an exception the claim is released (deleted) so the
   redelivery runs at once.
3. **complete**: the stream position is advanced (see ``events.core.ordering``), then the
   record is marked done. A crash before that mark runs the handler again after the claim
   expiry: the handler must tolerate that (at-least-once, once at a time). For effects
   committed exactly once, use the transactional inbox (``events.core.inbox``).

A redelivered id whose payload hash differs from the recorded one is refused
(``PayloadMismatchError``, permanent: dead-letter it) and logged with its ids. Records expire
after ``retention_seconds`` (Cosmos DB document ``ttl``; an expiry in memory): an event
redelivered later than that is handled again, so keep it longer than any redelivery or replay.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Final, Protocol

from events.core.envelope import IntegrationEvent
from events.core.ordering import (
    Arrival,
    GapReport,
    OrderPolicy,
    Position,
    arrival_of,
    sequence_number,
)
from events.core.telemetry import consume_span
from events.errors import EventInProgressError, PayloadMismatchError

__all__ = [
    "DEFAULT_CLAIM_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "Claim",
    "IdempotentConsumer",
    "InMemoryInbox",
    "Inbox",
    "InboxEntry",
    "InboxState",
    "Outcome",
    "decide_claim",
    "log_late",
    "mismatch_error",
    "payload_hash",
    "skipped_duplicate",
]

logger = logging.getLogger(__name__)

#: How long a claim holds before another delivery may take the event over: the message lock
#: duration of the topology's subscriptions and queues (PT1M). Service Bus redelivers the
#: message of a crashed consumer when its lock expires, and that delivery should find the
#: claim expired too; a longer claim makes it meet a live claim, be abandoned and come back
#: at once, each time counting a delivery, up to the max delivery count (dead-lettered).
DEFAULT_CLAIM_SECONDS: Final = 60
#: How long records are kept: the inbox container's default TTL (14 days).
DEFAULT_RETENTION_SECONDS: Final = 1_209_600
#: Claim attempts when records change under the consumer (create lost, take-over lost).
_CLAIM_ATTEMPTS: Final = 3
#: Position writes retried when another consumer advanced the same stream meanwhile.
_POSITION_ATTEMPTS: Final = 5


def payload_hash(event: IntegrationEvent) -> str:
    """sha256 of what makes an event's meaning: type, source, subject, partition key,
    sequence, schema and data, as canonical JSON. ``time`` and ``traceparent`` are left out:
    a re-publication may stamp them anew without changing the event."""
    canonical = json.dumps(
        {
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "partitionkey": event.partitionkey,
            "sequence": event.sequence,
            "dataschema": event.dataschema,
            "data": event.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class InboxState(Enum):
    IN_PROGRESS = "in-progress"
    DONE = "done"


@dataclass(frozen=True)
class InboxEntry:
    """One consumer's record of one event id. ``payload_hash`` is None for records written
    before hashes were kept (they match any payload); ``version`` is the store's etag."""

    consumer: str
    event_id: str
    state: InboxState
    payload_hash: str | None
    claim_expires_at: datetime
    version: str


class Claim(Enum):
    """What a delivery may do with an event id, given its record."""

    CREATE = "create"
    TAKE_OVER = "take-over"
    DONE = "done"
    BUSY = "busy"
    MISMATCH = "mismatch"


def decide_claim(entry: InboxEntry | None, digest: str, now: datetime) -> Claim:
    if entry is None:
        return Claim.CREATE
    if entry.payload_hash is not None and entry.payload_hash != digest:
        return Claim.MISMATCH
    if entry.state is InboxState.DONE:
        return Claim.DONE
    if entry.claim_expires_at > now:
        return Claim.BUSY
    return Claim.TAKE_OVER


class Inbox(Protocol):
    """The records of the idempotent consumer and its stream positions.

    Writes are conditional: ``create`` answers None when the record exists, ``take_over``,
    ``complete`` and ``release`` act only while the record still has the entry's version.
    """

    def entry(self, consumer: str, event_id: str) -> InboxEntry | None: ...

    def create(
        self,
        consumer: str,
        event_id: str,
        digest: str,
        claim_expires_at: datetime,
        ttl_seconds: int,
    ) -> InboxEntry | None: ...

    def take_over(
        self, entry: InboxEntry, claim_expires_at: datetime, ttl_seconds: int
    ) -> InboxEntry | None: ...

    def complete(self, entry: InboxEntry, ttl_seconds: int) -> bool: ...

    def release(self, entry: InboxEntry) -> None: ...

    def position(self, consumer: str, source: str, partition_key: str) -> Position | None: ...

    def save_position(self, consumer: str, position: Position, expected: Position | None) -> bool:
        """Write ``position`` if the stored one is still ``expected`` (None: none stored)."""
        ...


class InMemoryInbox:
    """A real in-memory inbox: conditional writes by version, records expire by TTL."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[InboxEntry, datetime]] = {}
        self._positions: dict[tuple[str, str, str], Position] = {}
        self._versions = 0

    def _version(self) -> str:
        self._versions += 1
        return str(self._versions)

    def _put(self, entry: InboxEntry, ttl_seconds: int) -> InboxEntry:
        stored = replace(entry, version=self._version())
        self._entries[(entry.consumer, entry.event_id)] = (
            stored,
            self._clock() + timedelta(seconds=ttl_seconds),
        )
        return stored

    def entry(self, consumer: str, event_id: str) -> InboxEntry | None:
        found = self._entries.get((consumer, event_id))
        if found is None:
            return None
        entry, purge_at = found
        if purge_at <= self._clock():
            del self._entries[(consumer, event_id)]
            return None
        return entry

    def _current(self, entry: InboxEntry) -> bool:
        stored = self.entry(entry.consumer, entry.event_id)
        return stored is not None and stored.version == entry.version

    def create(
        self,
        consumer: str,
        event_id: str,
        digest: str,
        claim_expires_at: datetime,
        ttl_seconds: int,
    ) -> InboxEntry | None:
        if self.entry(consumer, event_id) is not None:
            return None
        entry = InboxEntry(consumer, event_id, InboxState.IN_PROGRESS, digest, claim_expires_at, "")
        return self._put(entry, ttl_seconds)

    def take_over(
        self, entry: InboxEntry, claim_expires_at: datetime, ttl_seconds: int
    ) -> InboxEntry | None:
        if not self._current(entry):
            return None
        return self._put(replace(entry, claim_expires_at=claim_expires_at), ttl_seconds)

    def complete(self, entry: InboxEntry, ttl_seconds: int) -> bool:
        if not self._current(entry):
            return False
        self._put(replace(entry, state=InboxState.DONE), ttl_seconds)
        return True

    def release(self, entry: InboxEntry) -> None:
        if self._current(entry):
            del self._entries[(entry.consumer, entry.event_id)]

    def position(self, consumer: str, source: str, partition_key: str) -> Position | None:
        return self._positions.get((consumer, source, partition_key))

    def save_position(self, consumer: str, position: Position, expected: Position | None) -> bool:
        key = (consumer, position.source, position.partition_key)
        current = self._positions.get(key)
        if (current.version if current else None) != (expected.version if expected else None):
            return False
        self._positions[key] = replace(position, version=self._version())
        return True


@dataclass(frozen=True)
class Outcome:
    """What a consumer did with one delivery.

    ``handled``: the handler ran and its work is recorded. ``duplicate``: the event id was
    handled before; nothing ran. ``late``: older than an event already handled on its stream
    (skipped unless the policy handles late events). ``gap``: events are missing before this
    one on a contiguous stream (handled all the same).
    """

    handled: bool
    duplicate: bool
    late: bool = False
    gap: bool = False


def skipped_duplicate(consumer: str, event: IntegrationEvent) -> Outcome:
    """The outcome of an event ``consumer`` already handled, logged once with its id."""
    logger.info(
        "duplicate skipped consumer=%s event=%s",
        consumer,
        event.id,
        extra={"event_id": event.id},
    )
    return Outcome(handled=False, duplicate=True)


class IdempotentConsumer:
    def __init__(
        self,
        name: str,
        inbox: Inbox,
        handler: Callable[[IntegrationEvent], None],
        *,
        ordering: OrderPolicy | None = None,
        claim_seconds: int = DEFAULT_CLAIM_SECONDS,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self._inbox = inbox
        self._handler = handler
        self._ordering = ordering
        self._claim = timedelta(seconds=claim_seconds)
        self._retention = retention_seconds
        self._clock = clock
        self.handled = 0
        self.duplicates = 0
        self.late = 0

    def handle(self, event: IntegrationEvent) -> Outcome:
        """Run the handler unless this consumer already handled the event id.

        Raises ``EventInProgressError`` (transient) while another delivery holds the claim,
        ``PayloadMismatchError`` (permanent) for a known id with another payload. Exceptions
        of the handler propagate after the claim is released: the caller abandons the message
        and Service Bus redelivers it (and dead-letters it after the max delivery count).
        """
        digest = payload_hash(event)
        entry = self._claim_event(event, digest)
        if entry is None:
            self.duplicates += 1
            return skipped_duplicate(self.name, event)
        policy = self._ordering
        sequence = None if policy is None else sequence_number(event)
        last: Position | None = None
        arrival: Arrival | None = None
        if policy is not None and sequence is not None:
            last = self._inbox.position(self.name, event.source, event.partitionkey)
            arrival = arrival_of(last, sequence, contiguous=policy.contiguous(event))
        if policy is not None and arrival is Arrival.LATE and last and sequence is not None:
            log_late(self.name, event, last.sequence, sequence)
            self.late += 1
            if not policy.handle_late:
                self._inbox.complete(entry, self._retention)
                return Outcome(handled=False, duplicate=False, late=True)
        if policy is not None and arrival is Arrival.GAP and last and sequence is not None:
            policy.on_gap(
                GapReport(
                    self.name, event.id, event.source, event.partitionkey, last.sequence, sequence
                )
            )
        try:
            with consume_span(self.name, event):
                self._handler(event)
        except BaseException:
            self._inbox.release(entry)
            raise
        if sequence is not None:
            self._advance(event, sequence, last)
        if not self._inbox.complete(entry, self._retention):
            logger.warning(
                "claim lost consumer=%s event=%s: another delivery took it over after the "
                "claim expired; the handler may have run twice",
                self.name,
                event.id,
                extra={"event_id": event.id},
            )
        self.handled += 1
        return Outcome(
            handled=True,
            duplicate=False,
            late=arrival is Arrival.LATE,
            gap=arrival is Arrival.GAP,
        )

    def _claim_event(self, event: IntegrationEvent, digest: str) -> InboxEntry | None:
        """The claimed entry, or None when the event is done already."""
        for _ in range(_CLAIM_ATTEMPTS):
            now = self._clock()
            existing = self._inbox.entry(self.name, event.id)
            decision = decide_claim(existing, digest, now)
            if decision is Claim.DONE:
                return None
            if decision is Claim.MISMATCH and existing is not None:
                raise mismatch_error(self.name, event, existing.payload_hash, digest)
            if decision is Claim.BUSY and existing is not None:
                raise EventInProgressError(
                    f"event {event.id} is being handled by another delivery of consumer "
                    f"{self.name} until {existing.claim_expires_at.isoformat()}",
                    ids={"consumer": self.name, "event": event.id},
                )
            expires = now + self._claim
            claimed = (
                self._inbox.take_over(existing, expires, self._retention)
                if decision is Claim.TAKE_OVER and existing is not None
                else self._inbox.create(self.name, event.id, digest, expires, self._retention)
            )
            if claimed is not None:
                if decision is Claim.TAKE_OVER:
                    logger.warning(
                        "claim expired consumer=%s event=%s: handling again",
                        self.name,
                        event.id,
                        extra={"event_id": event.id},
                    )
                return claimed
        raise EventInProgressError(
            f"event {event.id}: its inbox record of consumer {self.name} keeps changing",
            ids={"consumer": self.name, "event": event.id},
        )

    def _advance(self, event: IntegrationEvent, sequence: int, read: Position | None) -> None:
        """Move the stream's position up to ``sequence`` (never down), against concurrent
        consumers of the same stream. ``read``: the position read before the handler (the
        first attempt writes over it; a lost race reads again)."""
        current = read
        for attempt in range(_POSITION_ATTEMPTS):
            if attempt:
                current = self._inbox.position(self.name, event.source, event.partitionkey)
            if current is not None and current.sequence >= sequence:
                return
            wanted = Position(event.source, event.partitionkey, sequence)
            if self._inbox.save_position(self.name, wanted, current):
                return
        logger.warning(
            "position not saved consumer=%s event=%s partitionkey=%s: the stream keeps "
            "changing; late events before it may go unnoticed",
            self.name,
            event.id,
            event.partitionkey,
            extra={"event_id": event.id},
        )


def mismatch_error(
    consumer: str, event: IntegrationEvent, recorded: str | None, digest: str
) -> PayloadMismatchError:
    logger.error(
        "payload mismatch consumer=%s event=%s partitionkey=%s recorded=%s received=%s: "
        "refused, dead-letter it",
        consumer,
        event.id,
        event.partitionkey,
        (recorded or "")[:12],
        digest[:12],
        extra={"event_id": event.id},
    )
    return PayloadMismatchError(
        f"event {event.id} was handled by consumer {consumer} with another payload "
        f"(sha256 {(recorded or '')[:12]}..., now {digest[:12]}...): refused",
        ids={"consumer": consumer, "event": event.id},
    )


def log_late(consumer: str, event: IntegrationEvent, last: int, sequence: int) -> None:
    logger.warning(
        "late event consumer=%s event=%s source=%s partitionkey=%s sequence=%d last=%d",
        consumer,
        event.id,
        event.source,
        event.partitionkey,
        sequence,
        last,
        extra={"event_id": event.id, "partition_key": event.partitionkey},
    )
