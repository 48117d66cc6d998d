"""A change-feed processor for Cosmos DB: leases, fair share, checkpoint after the handler.

    from events.changefeed import ChangeFeedProcessor, InMemoryLeaseStore
    from events.changefeed.cosmos import CosmosLeaseStore   # the Cosmos DB adapters

Layers (imports go one way): ``feed`` (ranges, pages, the ``ChangeFeed`` port) and ``leases``
(lease format, ``LeaseStore`` port, lifecycle rules) <- ``cosmos`` (adapters) <- ``processor``
and ``lag`` <- ``host`` (the long-running relay process). The Cosmos adapters are not imported
here, so pure users never load the SDK.
"""

from events.changefeed.feed import ChangeFeed, FeedRange, InMemoryChangeFeed, Page, StartFrom
from events.changefeed.lag import estimate_lag
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
    "LeaseManager",
    "LeaseStore",
    "Page",
    "StartFrom",
    "estimate_lag",
    "fair_share",
]
