"""Quarantine: where a document that can never become events goes, so the feed moves on.

A record holds the reason, the error type and text and the document itself (it stays in the
same database, so nothing leaves it) with its source coordinates, enough to re-drive it later.
The record id is deterministic per change, so writing it twice is harmless, and distinct per
change: (feed, partition key, document id, ``_lsn``), plus a digest of the document's content
when it has no usable id or ``_lsn`` (malformed documents must not overwrite each other).
A document too large to keep inside its record (Cosmos DB items hold at most 2 MB) is recorded
without its body; it can still be read from its container by id and partition key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from events.core.envelope import deterministic_id

__all__ = [
    "ExpiryNotice",
    "InMemoryQuarantine",
    "QuarantineAdmin",
    "QuarantineReason",
    "QuarantineRecord",
    "QuarantineStore",
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


class QuarantineStore(Protocol):
    def put(self, record: QuarantineRecord) -> None:
        """Store the record durably; raise TransientError when that is not possible now."""
        ...


class QuarantineAdmin(Protocol):
    """What operators need: see what is parked, and remove what was re-driven."""

    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        """Oldest first, at most ``limit``."""
        ...

    def delete(self, record: QuarantineRecord) -> None: ...


class InMemoryQuarantine:
    """A real (process-local) quarantine store for tests and dry runs."""

    def __init__(self) -> None:
        self.records: dict[str, QuarantineRecord] = {}

    def put(self, record: QuarantineRecord) -> None:
        self.records[record.id] = record

    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        found = [r for r in self.records.values() if feed is None or r.feed == feed]
        return sorted(found, key=lambda r: r.quarantined_at)[:limit]

    def delete(self, record: QuarantineRecord) -> None:
        self.records.pop(record.id, None)
