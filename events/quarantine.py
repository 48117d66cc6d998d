"""Quarantine: where a document that can never become events goes, so the feed moves on.

A record holds the reason, the error text and the document itself (it stays in the same
database, so nothing leaves it) with its source coordinates, enough to re-drive it later.
The record id is deterministic per change, so writing it twice is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from events.envelope import deterministic_id

__all__ = [
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
    document: Mapping[str, Any] = field(repr=False)

    @property
    def id(self) -> str:
        return deterministic_id("quarantine", self.feed, self.document_id, str(self.lsn))

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
            "quarantinedAt": self.quarantined_at.isoformat(),
            "document": dict(self.document),
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> QuarantineRecord:
        lsn = document.get("lsn")
        return cls(
            feed=str(document["feed"]),
            container=str(document["container"]),
            document_id=str(document["documentId"]),
            partition_key=str(document["partitionKey"]),
            lsn=lsn if isinstance(lsn, int) else None,
            reason=QuarantineReason(document["reason"]),
            error=str(document["error"]),
            quarantined_at=datetime.fromisoformat(str(document["quarantinedAt"])),
            document=dict(document["document"]),
        )


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
