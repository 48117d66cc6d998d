"""Quarantine: where a document that can never become events goes, so the feed moves on.

A record holds the reason, the error type and text and the document itself (it stays in the
same database, so nothing leaves it) with its source coordinates, enough to re-drive it later.
The record id is deterministic per change, so writing it twice is harmless, and distinct per
change: (feed, partition key, document id, ``_lsn``), plus a digest of the document's content
when it has no usable id or ``_lsn`` (malformed documents must not overwrite each other).
A document too large to keep inside its record (Cosmos DB items hold at most 2 MB) is recorded
without its body; it can still be read from its container by id and partition key.

Parked aggregates. Once a change of an aggregate (feed + partition key value) is quarantined,
every later change of it is quarantined behind it, in that batch and in every later one, until
a re-drive releases it. The relay learns which aggregates of a batch are parked with one
question to the store (``parked``), whatever the batch size; a store answers it from one small
marker per parked aggregate (``ParkedAggregate``), written after the aggregate's records
(``park``). The marker keeps the ``_lsn`` of the aggregate's first parked change: a change
before it (a batch delivered again after it finished) is not held back behind it. Every
``park`` gives the marker a new ``version``; ``release`` removes the marker only if its version
is still the one the re-drive read, so a change parked while a re-drive runs keeps its
aggregate parked instead of being overtaken by the next change.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from events.core.envelope import deterministic_id

__all__ = [
    "ExpiryNotice",
    "InMemoryQuarantine",
    "ParkedAggregate",
    "QuarantineAdmin",
    "QuarantineReason",
    "QuarantineRecord",
    "QuarantineStore",
    "parked_aggregate_id",
]


class QuarantineReason(StrEnum):
    INVALID_DOCUMENT = "invalid-document"
    UNMAPPABLE = "unmappable"
    EVENT_TOO_LARGE = "event-too-large"
    BLOCKED_BEHIND_QUARANTINED = "blocked-behind-quarantined-change"
    #: An unexpected error while mapping (a bug, or input no mapping foresaw).
    MAPPING_FAILED = "mapping-failed"


_UNKNOWN = "<unknown>"
#: Bodies above this stay out of the record (a Cosmos DB item holds at most 2 MB).
MAX_KEPT_BODY_BYTES = 1_900_000


def _canonical(document: Mapping[str, Any]) -> str:
    # default=repr and the fallback: a record id must exist whatever the mapping holds (parsed
    # JSON never holds cycles or absurd nesting, but the record must not be what fails).
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=repr)
    except (ValueError, RecursionError):
        return repr(document)


def _digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class QuarantineRecord:
    feed: str
    container: str
    document_id: str
    partition_key: str
    lsn: int | None
    reason: QuarantineReason
    error: str
    quarantined_at: datetime
    #: The document, or None when it was too large to keep (see the module docstring).
    document: Mapping[str, Any] | None = field(repr=False)
    error_type: str = ""
    #: Digest of the document's content, set when it has no usable id or ``_lsn``.
    content_digest: str | None = None

    @classmethod
    def of(
        cls,
        document: Mapping[str, Any],
        *,
        feed: str,
        container: str,
        partition_key: str,
        reason: QuarantineReason,
        error: str,
        error_type: str,
        quarantined_at: datetime,
    ) -> QuarantineRecord:
        """The record of one changed document, whatever it holds."""
        raw_id = document.get("id")
        raw_lsn = document.get("_lsn")
        document_id = raw_id if isinstance(raw_id, str) and raw_id else _UNKNOWN
        lsn = raw_lsn if isinstance(raw_lsn, int) and not isinstance(raw_lsn, bool) else None
        canonical = _canonical(document)
        digest = _digest(canonical) if document_id == _UNKNOWN or lsn is None else None
        kept = len(canonical) <= MAX_KEPT_BODY_BYTES
        return cls(
            feed=feed,
            container=container,
            document_id=document_id,
            partition_key=partition_key,
            lsn=lsn,
            reason=reason,
            error=error,
            quarantined_at=quarantined_at,
            document=dict(document) if kept else None,
            error_type=error_type,
            content_digest=digest,
        )

    @property
    def id(self) -> str:
        parts = [self.feed, self.partition_key, self.document_id, str(self.lsn)]
        if self.content_digest is not None:
            parts.append(self.content_digest)
        return deterministic_id("quarantine", *parts)

    def to_document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "partitionKey": self.partition_key,
            "feed": self.feed,
            "container": self.container,
            "documentId": self.document_id,
            "lsn": self.lsn,
            "reason": self.reason.value,
            "error": self.error,
            "errorType": self.error_type,
            "contentDigest": self.content_digest,
            "quarantinedAt": self.quarantined_at.isoformat(),
            "document": None if self.document is None else dict(self.document),
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> QuarantineRecord:
        lsn = document.get("lsn")
        body = document.get("document")
        digest = document.get("contentDigest")
        return cls(
            feed=str(document["feed"]),
            container=str(document["container"]),
            document_id=str(document["documentId"]),
            partition_key=str(document["partitionKey"]),
            lsn=lsn if isinstance(lsn, int) else None,
            reason=QuarantineReason(document["reason"]),
            error=str(document["error"]),
            quarantined_at=datetime.fromisoformat(str(document["quarantinedAt"])),
            document=dict(body) if isinstance(body, Mapping) else None,
            error_type=str(document.get("errorType") or ""),
            content_digest=digest if isinstance(digest, str) else None,
        )


@dataclass(frozen=True)
class ExpiryNotice:
    """Which records the container's TTL deletes soon: each is written ``ttl`` after it was
    quarantined (Cosmos DB counts TTL from the last write, which is when it was quarantined);
    records within ``notice`` of that are due for a decision (fix and re-drive, or let go)."""

    ttl: timedelta
    notice: timedelta

    def expires_at(self, record: QuarantineRecord) -> datetime:
        return record.quarantined_at + self.ttl

    def due(self, records: list[QuarantineRecord], now: datetime) -> list[QuarantineRecord]:
        """The records that expire within ``notice`` of ``now``, soonest first."""
        found = [r for r in records if self.expires_at(r) - now <= self.notice]
        return sorted(found, key=self.expires_at)


@dataclass(frozen=True)
class ParkedAggregate:
    """The marker of a parked aggregate: its feed and partition key value, when a change of it
    was last parked, and the store's version of the marker (it changes on every ``park``)."""

    feed: str
    partition_key: str
    parked_at: datetime
    version: str
    #: ``_lsn`` of the first parked change (changes from it on wait); None: every change waits.
    from_lsn: int | None = None

    @property
    def id(self) -> str:
        return parked_aggregate_id(self.feed, self.partition_key)


def parked_aggregate_id(feed: str, partition_key: str) -> str:
    """The marker's id: one per (feed, partition key value), distinct from every record id."""
    return deterministic_id("parked-aggregate", feed, partition_key)


class QuarantineStore(Protocol):
    """What the relay needs: store a record, park an aggregate, ask which are parked."""

    def put(self, record: QuarantineRecord) -> None:
        """Store the record durably; raise TransientError when that is not possible now."""
        ...

    def park(self, feed: str, partition_key: str, at: datetime, from_lsn: int | None) -> None:
        """Mark the aggregate parked from change ``from_lsn`` on (again: a new version, and
        this ``from_lsn``), after its records are stored; writing it twice is harmless. Raise
        TransientError when that is not possible now."""
        ...

    def parked(self, feed: str, partition_keys: Collection[str]) -> dict[str, int | None]:
        """Those of ``partition_keys`` whose aggregate is parked in ``feed``, each with the
        ``from_lsn`` of its marker: one request to the store, whatever the number of keys.
        Raise TransientError when it cannot answer."""
        ...


class QuarantineAdmin(Protocol):
    """What operators need: see what is parked, remove what was re-driven, release."""

    def delete(self, record: QuarantineRecord) -> None: ...

    def records_of(self, feed: str, partition_key: str) -> list[QuarantineRecord]:
        """Every record of one aggregate, in no particular order."""
        ...

    def parked_aggregate(self, feed: str, partition_key: str) -> ParkedAggregate | None:
        """The aggregate's marker, None when it is not parked."""
        ...

    def parked_aggregates(self, feed: str | None = None, limit: int = 100) -> list[ParkedAggregate]:
        """Markers, longest parked first (by their last park), at most ``limit``."""
        ...

    def release(self, parked: ParkedAggregate) -> bool:
        """Remove the marker if it still has ``parked.version``: True when released (or
        already gone), False when the aggregate was parked again since it was read."""
        ...

    # Last in the class: below a method named ``list``, ``list[...]`` in an annotation would
    # name the method, not the builtin.
    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        """Oldest first, at most ``limit``."""
        ...


class InMemoryQuarantine:
    """A real (process-local) quarantine store for tests and dry runs."""

    def __init__(self) -> None:
        self.records: dict[str, QuarantineRecord] = {}
        self.parks: dict[tuple[str, str], ParkedAggregate] = {}
        #: Calls of ``parked``: what a database store would count as requests.
        self.parked_queries = 0
        self._versions = itertools.count(1)

    def put(self, record: QuarantineRecord) -> None:
        self.records[record.id] = record

    def park(self, feed: str, partition_key: str, at: datetime, from_lsn: int | None) -> None:
        version = str(next(self._versions))
        self.parks[feed, partition_key] = ParkedAggregate(
            feed, partition_key, at, version, from_lsn
        )

    def parked(self, feed: str, partition_keys: Collection[str]) -> dict[str, int | None]:
        self.parked_queries += 1
        found = [self.parks[feed, key] for key in partition_keys if (feed, key) in self.parks]
        return {parked.partition_key: parked.from_lsn for parked in found}

    def delete(self, record: QuarantineRecord) -> None:
        self.records.pop(record.id, None)

    def records_of(self, feed: str, partition_key: str) -> list[QuarantineRecord]:
        return [
            r for r in self.records.values() if r.feed == feed and r.partition_key == partition_key
        ]

    def parked_aggregate(self, feed: str, partition_key: str) -> ParkedAggregate | None:
        return self.parks.get((feed, partition_key))

    def parked_aggregates(self, feed: str | None = None, limit: int = 100) -> list[ParkedAggregate]:
        found = [p for p in self.parks.values() if feed is None or p.feed == feed]
        return sorted(found, key=lambda p: p.parked_at)[:limit]

    def release(self, parked: ParkedAggregate) -> bool:
        current = self.parks.get((parked.feed, parked.partition_key))
        if current is None:
            return True
        if current.version != parked.version:
            return False
        del self.parks[parked.feed, parked.partition_key]
        return True

    # Last in the class: below a method named ``list``, ``list[...]`` in an annotation would
    # name the method, not the builtin.
    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        found = [r for r in self.records.values() if feed is None or r.feed == feed]
        return sorted(found, key=lambda r: r.quarantined_at)[:limit]
