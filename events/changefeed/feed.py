"""The change feed as the processor sees it: feed ranges, and pages read from a position.

A position is either a continuation (an opaque string handed out by the same feed) or a start
(``"beginning"``, ``"now"`` or a point in time). ``ChangeFeed`` is the port; the Cosmos DB
adapter lives in ``events.adapters.cosmos.changefeed`` and ``InMemoryChangeFeed`` is a real
in-memory backend (latest-version mode, several feed ranges) for tests and demos.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChangeFeed",
    "FeedRange",
    "InMemoryChangeFeed",
    "Page",
    "Position",
    "StartFrom",
    "is_start",
]

#: Where a feed range is read from when its lease has no continuation yet.
StartFrom = Literal["beginning", "now"] | datetime

#: A continuation from an earlier page, or a start.
Position = str | StartFrom

_MIN_EPK = ""
_MAX_EPK = "FF"


def is_start(position: Position) -> bool:
    return isinstance(position, datetime) or position in ("beginning", "now")


@dataclass(frozen=True, order=True)
class FeedRange:
    """A range of effective partition keys, ``[min, max)``, as Cosmos DB hands them out."""

    min: str
    max: str

    @property
    def key(self) -> str:
        """The lease id suffix: stable, readable and free of characters ids may not hold."""
        return f"{self.min or '00'}-{self.max}"

    def overlaps(self, other: FeedRange) -> bool:
        return _lower(self.min) < _upper(other.max) and _lower(other.min) < _upper(self.max)

    def to_json(self) -> dict[str, str]:
        return {"min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FeedRange:
        return cls(min=str(value["min"]), max=str(value["max"]))


def _lower(epk: str) -> str:
    return epk.upper()


def _upper(epk: str) -> str:
    return (epk or _MAX_EPK).upper()


@dataclass(frozen=True)
class Page:
    """Changed documents in order, and the continuation that resumes after them."""

    items: list[dict[str, Any]]
    continuation: str


@runtime_checkable
class ChangeFeed(Protocol):
    """One container's change feed (latest-version mode)."""

    def feed_ranges(self) -> list[FeedRange]: ...

    def read_page(self, feed_range: FeedRange, position: Position, max_items: int) -> Page:
        """The next page after ``position``; empty when nothing changed since."""
        ...


@dataclass
class _Version:
    lsn: int
    epk: str
    document: dict[str, Any]


@dataclass
class InMemoryChangeFeed:
    """A container's latest-version change feed kept in memory, split into ``ranges`` ranges.

    Documents land in a range by a hash of their partition key. Continuations are the LSN of
    the last change seen, as the local server's are.
    """

    ranges: int = 1
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _lsn: int = 0
    _versions: dict[str, _Version] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not 1 <= self.ranges <= 255:
            raise ValueError("ranges must be between 1 and 255")

    def feed_ranges(self) -> list[FeedRange]:
        bounds = [f"{i * 255 // self.ranges:02X}" for i in range(self.ranges)] + [_MAX_EPK]
        bounds[0] = _MIN_EPK
        return [FeedRange(bounds[i], bounds[i + 1]) for i in range(self.ranges)]

    def write(self, document: Mapping[str, Any], partition_key: str) -> int:
        """Create or replace a document; returns its new LSN."""
        with self._lock:
            self._lsn += 1
            stored = dict(document)
            stored["_lsn"] = self._lsn
            stored["_ts"] = int(self.clock().timestamp())
            epk = f"{zlib.crc32(partition_key.encode()) % 255:02X}"
            self._versions[str(stored["id"])] = _Version(self._lsn, epk, stored)
            return self._lsn

    def read_page(self, feed_range: FeedRange, position: Position, max_items: int) -> Page:
        with self._lock:
            floor = self._floor(position)
            since = position if isinstance(position, datetime) else None
            matching = sorted(
                (
                    v
                    for v in self._versions.values()
                    if v.lsn > floor
                    and _lower(feed_range.min) <= v.epk < _upper(feed_range.max)
                    and (since is None or v.document["_ts"] >= int(since.timestamp()))
                ),
                key=lambda v: v.lsn,
            )
            page = matching[:max_items]
            upto = page[-1].lsn if len(matching) > max_items else max(self._lsn, floor)
            return Page(items=[dict(v.document) for v in page], continuation=str(upto))

    def _floor(self, position: Position) -> int:
        if position == "now":
            return self._lsn
        if position == "beginning" or isinstance(position, datetime):
            return 0
        if not position.isdigit():
            raise ValueError(f"not a continuation of this feed: {position!r}")
        return int(position)
