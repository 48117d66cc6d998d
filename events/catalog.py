"""This deployment's feeds: which containers are monitored and how their documents map.

Each feed becomes one Functions trigger and one change-feed processor name. The lease prefix
is unique per feed (functions sharing a lease container must not steal each other's leases)
and agrees with ``infra/topology.json`` (pinned by a test).
"""

from __future__ import annotations

from dataclasses import dataclass

from events import settings
from events.contracts import OrderDeletedV1, OrderUpsertedV1
from events.sources import CdcRule, CdcSource, EventStoreSource, OutboxSource, Source

__all__ = ["FEEDS", "ORDER_CDC", "FeedDefinition", "feed_definition"]


@dataclass(frozen=True)
class FeedDefinition:
    function_name: str
    container_setting: str
    lease_prefix: str
    partition_key_path: str
    sources: tuple[Source, ...]


#: Order documents publish only these fields; everything else stays in the database.
ORDER_CDC = CdcRule(
    document_type="Order",
    upserted=OrderUpsertedV1,
    deleted=OrderDeletedV1,
    id_field="orderId",
    fields=("status", "customerId", "totalCents", "currency"),
)

FEEDS: tuple[FeedDefinition, ...] = (
    FeedDefinition(
        function_name="relay_orders",
        container_setting=settings.ORDERS_CONTAINER,
        lease_prefix="relay-orders.",
        partition_key_path="/partitionKey",
        sources=(OutboxSource(), CdcSource([ORDER_CDC])),
    ),
    FeedDefinition(
        function_name="relay_eventstore",
        container_setting=settings.EVENTSTORE_CONTAINER,
        lease_prefix="relay-eventstore.",
        partition_key_path="/streamId",
        sources=(EventStoreSource(),),
    ),
)


def feed_definition(function_name: str) -> FeedDefinition:
    for definition in FEEDS:
        if definition.function_name == function_name:
            return definition
    raise KeyError(f"no feed named {function_name!r}")
