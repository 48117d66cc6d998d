"""A change-feed processor for Cosmos DB: leases, fair share, checkpoint after the handler.

    from events.changefeed import ChangeFeedProcessor, InMemoryLeaseStore
    from events.adapters.cosmos.changefeed import CosmosLeaseStore   # the Cosmos DB adapters

A generic part: it depends on its own ports only (``feed``: ranges, pages, the ``ChangeFeed``
port; ``leases``: lease format, ``LeaseStore`` port, lifecycle rules; ``errors``), never on an
adapter or the relay. Imports go one way: ``errors`` <- ``feed`` <- ``leases`` <- ``processor``
and ``lag``. The Cosmos DB adapters (``events.adapters.cosmos.changefeed``) implement the
ports; the long-running host is ``events.hosts.processor``.
"""

from events.changefeed.feed import ChangeFeed, FeedRange, InMemoryChangeFeed, Page, StartFrom
from events.changefeed.lag import LeaseLag, estimate_lag, measure_lag
from events.changefeed.leases import (
    InMemoryLeaseStore,
    Lease,
    LeaseManager,
    LeaseStore,
    fair_share,
)
from events.changefeed.processor import Backoff, ChangeFeedProcessor, Handler

__all__ = [
    "Backoff",
    "ChangeFeed",
    "ChangeFeedProcessor",
    "FeedRange",
    "Handler",
    "InMemoryChangeFeed",
    "InMemoryLeaseStore",
    "Lease",
    "LeaseLag",
    "LeaseManager",
    "LeaseStore",
    "Page",
    "StartFrom",
    "estimate_lag",
    "fair_share",
    "measure_lag",
]
