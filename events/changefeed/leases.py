"""Leases: which instance reads which feed range, and from where (the checkpoint).

One lease document per feed range, in a lease container partitioned by ``/id``::

    {
      "id": "relay-orders.00-FF",          # <prefix><feed range key>
      "leaseFormat": 1,
      "processor": "relay-orders.",        # the prefix: one per processor name (and replay)
      "feedRange": {"min": "", "max": "FF"},
      "owner": "host-a" | null,            # instance id; null = free
      "continuation": "<opaque>" | null,   # resume point; null = not read yet
      "startFrom": "beginning" | "<ISO-8601 UTC time>",   # used only while continuation is null
      "timestamp": "<ISO-8601 UTC>",       # last write (acquire, renew, checkpoint, release)
      "expiresAt": "<ISO-8601 UTC>" | null # the owner must renew before this; later it is free
    }

Every write is a replace guarded by the document's etag (optimistic concurrency): a write
that loses (412, or 409 on create) raises ``LeaseLostError`` and the loser drops the lease.
``LeaseStore`` is the storage port (``InMemoryLeaseStore`` here, ``CosmosLeaseStore`` in
``events.adapters.cosmos.changefeed``); ``LeaseManager`` holds the lifecycle rules on top of it
(create, acquire with fair share, renew, checkpoint, release, expiry) and does no I/O itself.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol

from events.changefeed.errors import LeaseLostError
from events.changefeed.feed import FeedRange, Position, StartFrom

__all__ = [
    "LEASE_FORMAT",
    "InMemoryLeaseStore",
    "Lease",
    "LeaseManager",
    "LeaseStart",
    "LeaseStore",
    "fair_share",
]

LEASE_FORMAT: Final = 1

#: What a lease records as its start: "now" is resolved to the creation time.
LeaseStart = Literal["beginning"] | datetime


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class Lease:
    id: str
    processor: str
    feed_range: FeedRange
    start_from: LeaseStart
    timestamp: datetime
    owner: str | None = None
    continuation: str | None = None
    expires_at: datetime | None = None
    #: The store's version of this document (Cosmos ``_etag``); not part of the document.
    etag: str | None = None

    def is_owned_by(self, instance_id: str, now: datetime) -> bool:
        return self.owner == instance_id and not self.is_free(now)

    def is_free(self, now: datetime) -> bool:
        return self.owner is None or self.expires_at is None or self.expires_at <= now

    @property
    def position(self) -> Position:
        """Where reading resumes: the checkpoint, else the start recorded at creation."""
        return self.continuation if self.continuation is not None else self.start_from

    def to_document(self) -> dict[str, Any]:
        start = self.start_from
        return {
            "id": self.id,
            "leaseFormat": LEASE_FORMAT,
            "processor": self.processor,
            "feedRange": self.feed_range.to_json(),
            "owner": self.owner,
            "continuation": self.continuation,
            "startFrom": start if isinstance(start, str) else _iso(start),
            "timestamp": _iso(self.timestamp),
            "expiresAt": _iso(self.expires_at) if self.expires_at else None,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Lease:
        raw_start = str(document["startFrom"])
        start: LeaseStart = "beginning" if raw_start == "beginning" else _parse(raw_start)
        expires = document.get("expiresAt")
        etag = document.get("_etag")
        return cls(
            id=str(document["id"]),
            processor=str(document["processor"]),
            feed_range=FeedRange.from_json(document["feedRange"]),
            start_from=start,
            timestamp=_parse(str(document["timestamp"])),
            owner=document.get("owner"),
            continuation=document.get("continuation"),
            expires_at=_parse(str(expires)) if expires else None,
            etag=str(etag) if etag is not None else None,
        )


class LeaseStore(Protocol):
    """Lease documents with etag-guarded writes. Implementations must be thread-safe."""

    def list(self, prefix: str) -> list[Lease]:
        """Every lease whose id starts with ``prefix``."""
        ...

    def get(self, lease_id: str) -> Lease | None: ...

    def create(self, lease: Lease) -> Lease:
        """Store a new lease; ``LeaseLostError`` when one with that id exists."""
        ...

    def replace(self, lease: Lease) -> Lease:
        """Write ``lease`` if the stored version still has ``lease.etag``, else
        ``LeaseLostError``. Returns the stored lease with its new etag."""
        ...

    def delete(self, lease: Lease) -> None:
        """Remove a lease (missing is fine)."""
        ...


class InMemoryLeaseStore:
    """Leases in a dict, with the same etag rules as the Cosmos DB adapter."""

    def __init__(self) -> None:
        self._documents: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)

    def list(self, prefix: str) -> list[Lease]:
        with self._lock:
            return [
                Lease.from_document(doc)
                for key, doc in sorted(self._documents.items())
                if key.startswith(prefix)
            ]

    def get(self, lease_id: str) -> Lease | None:
        with self._lock:
            doc = self._documents.get(lease_id)
            return Lease.from_document(doc) if doc is not None else None

    def create(self, lease: Lease) -> Lease:
        with self._lock:
            if lease.id in self._documents:
                raise LeaseLostError(f"lease {lease.id} already exists")
            return self._store(lease)

    def replace(self, lease: Lease) -> Lease:
        with self._lock:
            current = self._documents.get(lease.id)
            if current is None or current["_etag"] != lease.etag:
                raise LeaseLostError(f"lease {lease.id} was changed by someone else")
            return self._store(lease)

    def delete(self, lease: Lease) -> None:
        with self._lock:
            self._documents.pop(lease.id, None)

    def _store(self, lease: Lease) -> Lease:
        document = lease.to_document()
        document["_etag"] = f'"{next(self._versions)}"'
        self._documents[lease.id] = document
        return Lease.from_document(document)


def fair_share(leases: Iterable[Lease], instance_id: str, now: datetime) -> list[Lease]:
    """The leases ``instance_id`` should try to take now (equal-share balancing).

    Target = ceil(leases / live owners, counting this instance). Below target, take free or
    expired leases first; when none is free, steal ONE lease from the owner holding the most,
    and only if that owner is above target (so shares converge without ping-pong).
    """
    leases = list(leases)
    if not leases:
        return []
    counts: Counter[str] = Counter(
        lease.owner for lease in leases if lease.owner is not None and not lease.is_free(now)
    )
    counts.setdefault(instance_id, 0)
    target = math.ceil(len(leases) / len(counts))
    missing = target - counts[instance_id]
    if missing <= 0:
        return []
    free = [lease for lease in leases if lease.is_free(now)]
    if free:
        return free[:missing]
    owner, held = max(
        ((o, n) for o, n in counts.items() if o != instance_id),
        key=lambda item: (item[1], item[0]),
    )
    if held <= target:
        return []
    return [next(lease for lease in leases if lease.owner == owner and not lease.is_free(now))]


class LeaseManager:
    """Lease lifecycle for one processor (prefix) and one instance."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        prefix: str,
        instance_id: str,
        lease_duration: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not prefix:
            raise ValueError("a lease prefix is required (one per processor name)")
        self.store = store
        self.prefix = prefix
        self.instance_id = instance_id
        self.lease_duration = lease_duration
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    def ensure(
        self,
        feed_ranges: Iterable[FeedRange],
        start_from: StartFrom,
        current: Callable[[FeedRange], str] | None = None,
    ) -> list[Lease]:
        """Create a lease for each feed range that no existing lease overlaps.

        Overlap rather than equality: after a split or merge the old leases keep covering
        their ranges (the continuation follows the split), so no range is read twice.
        ``start_from`` is recorded only on new leases. For "now", ``current(range)`` gives the
        feed's current continuation, stored as the first checkpoint so that whoever reads the
        lease first starts exactly there; without it "now" is recorded as the creation time.
        """
        existing = self.store.list(self.prefix)
        now = self.now()
        start: LeaseStart = now if start_from == "now" else start_from
        for feed_range in feed_ranges:
            if any(lease.feed_range.overlaps(feed_range) for lease in existing):
                continue
            continuation = current(feed_range) if start_from == "now" and current else None
            lease = Lease(
                id=f"{self.prefix}{feed_range.key}",
                processor=self.prefix,
                feed_range=feed_range,
                start_from=start,
                timestamp=now,
                continuation=continuation,
            )
            try:
                existing.append(self.store.create(lease))
            except LeaseLostError:
                continue  # another instance created it first: same content
        return existing

    def balance(self, held: Collection[str] = ()) -> list[Lease]:
        """Take this instance's fair share; returns the leases acquired now.

        ``held`` are the lease ids the caller is working on. A lease the store says this
        instance owns but the caller does not hold (a restart with the same instance id) is
        taken back first.
        """
        now = self.now()
        leases = self.store.list(self.prefix)
        candidates = [
            lease
            for lease in leases
            if lease.is_owned_by(self.instance_id, now) and lease.id not in held
        ]
        candidates += fair_share(leases, self.instance_id, now)
        acquired = []
        for lease in candidates:
            try:
                acquired.append(self.acquire(lease))
            except LeaseLostError:
                continue
        return acquired

    def acquire(self, lease: Lease) -> Lease:
        now = self.now()
        return self.store.replace(
            replace(
                lease, owner=self.instance_id, timestamp=now, expires_at=now + self.lease_duration
            )
        )

    def renew(self, lease: Lease, continuation: str | None = None) -> Lease:
        """Extend ownership; also records ``continuation`` when given (a safe position)."""
        now = self.now()
        self._check_owned(lease)
        return self.store.replace(
            replace(
                lease,
                timestamp=now,
                expires_at=now + self.lease_duration,
                continuation=continuation if continuation is not None else lease.continuation,
            )
        )

    def checkpoint(self, lease: Lease, continuation: str) -> Lease:
        """Record that everything before ``continuation`` is handled; renews too."""
        return self.renew(lease, continuation)

    def release(self, lease: Lease, continuation: str | None = None) -> Lease | None:
        """Give the lease up (keeping the checkpoint); None when it was already lost."""
        try:
            return self.store.replace(
                replace(
                    lease,
                    owner=None,
                    expires_at=None,
                    timestamp=self.now(),
                    continuation=continuation if continuation is not None else lease.continuation,
                )
            )
        except LeaseLostError:
            return None

    def owned(self) -> list[Lease]:
        now = self.now()
        return [
            lease
            for lease in self.store.list(self.prefix)
            if lease.is_owned_by(self.instance_id, now)
        ]

    def _check_owned(self, lease: Lease) -> None:
        if lease.owner != self.instance_id:
            raise LeaseLostError(f"lease {lease.id} is not owned by {self.instance_id}")
        # An expired lease is still renewed if nobody took it meanwhile: the etag decides.
