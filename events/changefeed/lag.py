"""How far behind a processor is: documents pending per lease.

The Python SDK has no estimator (azure-sdk-for-python #24249), so this reads the feed from
each lease's checkpoint without moving it and counts what it finds, up to ``limit`` per lease
(latest-version mode: each changed document counts once). It costs reads, so call it from a
monitor, not from the processing loop.
https://github.com/Azure/azure-sdk-for-python/issues/24249
"""

from __future__ import annotations

from events.changefeed.feed import ChangeFeed
from events.changefeed.leases import LeaseStore

__all__ = ["estimate_lag"]


def estimate_lag(
    feed: ChangeFeed,
    lease_store: LeaseStore,
    name: str,
    *,
    page_size: int = 1000,
    limit: int = 100_000,
) -> dict[str, int]:
    """Lease id -> documents changed after its checkpoint (at most ``limit``)."""
    pending: dict[str, int] = {}
    for lease in lease_store.list(name):
        position = lease.position
        count = 0
        while count < limit:
            page = feed.read_page(lease.feed_range, position, min(page_size, limit - count))
            if not page.items:
                break
            count += len(page.items)
            position = page.continuation
        pending[lease.id] = count
    return pending
