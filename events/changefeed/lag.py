"""How far behind a processor is, per lease: changes pending and time behind.

The Python SDK has no estimator (azure-sdk-for-python #24249), so this reads the feed from
each lease's checkpoint without moving it and counts what it finds, up to ``limit`` per lease
(latest-version mode: each changed document counts once, however often it changed).
https://github.com/Azure/azure-sdk-for-python/issues/24249

Time behind is ``now`` minus the ``_ts`` of the OLDEST pending change (the first one after the
checkpoint), 0 when nothing is pending: how long the oldest change not yet relayed has been
waiting, the figure an operator compares with an outage or with the outbox TTL. It rises by
one second per second while the relay is stopped and falls to 0 as soon as it has caught up,
whatever the write rate. (The alternative, the newest change's time minus the checkpoint's
time, stays at 0 while nothing new is written even if old changes are still pending.)
``_ts`` has one-second resolution, and a document changed again after the checkpoint
carries its newest ``_ts`` (latest-version mode), so the figure can only be an under-estimate.

It costs reads (one page per ``page_size`` pending changes per lease), so call it from a
monitor or the ``lag`` command, not from the processing loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from events.changefeed.feed import ChangeFeed, FeedRange, Position
from events.changefeed.leases import Lease, LeaseStore

__all__ = ["LeaseLag", "estimate_lag", "lease_lag", "measure_lag", "range_lag"]


@dataclass(frozen=True)
class LeaseLag:
    """One lease's distance to the end of its feed range."""

    processor: str
    lease: str
    feed_range: FeedRange
    owner: str | None
    #: Documents changed after the checkpoint, at most the ``limit`` the caller gave.
    pending: int
    #: True when counting stopped at the limit: at least ``pending`` are pending.
    capped: bool
    #: ``_ts`` of the oldest pending change; None when nothing is pending.
    oldest: datetime | None
    #: Seconds between ``oldest`` and the moment of the measure; 0 when nothing is pending.
    seconds_behind: float


def _timestamp(document: dict[str, Any]) -> datetime | None:
    ts = document.get("_ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    return datetime.fromtimestamp(ts, UTC)


def lease_lag(
    feed: ChangeFeed,
    lease: Lease,
    *,
    now: datetime,
    page_size: int = 1000,
    limit: int = 100_000,
) -> LeaseLag:
    """Read ``lease``'s feed range from its checkpoint (never written back) and measure it."""
    return range_lag(
        feed,
        processor=lease.processor,
        lease_id=lease.id,
        feed_range=lease.feed_range,
        owner=lease.owner,
        position=lease.position,
        now=now,
        page_size=page_size,
        limit=limit,
    )


def range_lag(
    feed: ChangeFeed,
    *,
    processor: str,
    lease_id: str,
    feed_range: FeedRange,
    owner: str | None,
    position: Position,
    now: datetime,
    page_size: int,
    limit: int,
) -> LeaseLag:
    """Measure one feed range from ``position`` (a lease's checkpoint, or one read from a
    lease of another format)."""
    count = 0
    oldest: datetime | None = None
    while count < limit:
        page = feed.read_page(feed_range, position, min(page_size, limit - count))
        if not page.items:
            break
        if oldest is None:
            oldest = _timestamp(page.items[0])
        count += len(page.items)
        position = page.continuation
    behind = max(0.0, (now - oldest).total_seconds()) if oldest is not None and count else 0.0
    return LeaseLag(
        processor=processor,
        lease=lease_id,
        feed_range=feed_range,
        owner=owner,
        pending=count,
        capped=count >= limit,
        oldest=oldest if count else None,
        seconds_behind=behind,
    )


def measure_lag(
    feed: ChangeFeed,
    lease_store: LeaseStore,
    prefix: str,
    *,
    page_size: int = 1000,
    limit: int = 100_000,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[LeaseLag]:
    """One row per lease of the processor named ``prefix``, in lease id order.

    ``now`` is taken once, before reading, so that every row of one measure is comparable.
    """
    now = clock()
    return [
        lease_lag(feed, lease, now=now, page_size=page_size, limit=limit)
        for lease in lease_store.list(prefix)
    ]


def estimate_lag(
    feed: ChangeFeed,
    lease_store: LeaseStore,
    name: str,
    *,
    page_size: int = 1000,
    limit: int = 100_000,
) -> dict[str, int]:
    """Lease id -> documents changed after its checkpoint (at most ``limit``)."""
    return {
        row.lease: row.pending
        for row in measure_lag(feed, lease_store, name, page_size=page_size, limit=limit)
    }
