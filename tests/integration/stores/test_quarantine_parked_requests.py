"""The relay's parked-aggregate check costs one Cosmos DB request per batch, whatever its size,
on the local server with the real SDK (one and four physical partitions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from azure.cosmos import PartitionKey

from devstack.cosmos import CountingTransport, LocalCosmos
from events.adapters.cosmos.stores import CosmosQuarantine

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("server", ["local_cosmos", "partitioned_cosmos"])
def test_cosmos_parked_check_of_a_100_aggregate_batch_is_one_request(
    server: str, request: pytest.FixtureRequest
) -> None:
    cosmos: LocalCosmos = request.getfixturevalue(server)
    transport = CountingTransport()
    client = cosmos.client(transport)
    database = client.create_database(id=f"test-{uuid.uuid4().hex[:12]}")
    try:
        container = database.create_container(
            id="quarantine", partition_key=PartitionKey(path="/partitionKey")
        )
        store = CosmosQuarantine(container)
        for n in (3, 50, 97):
            store.park("relay_orders", f"order-{n}", NOW, n)
        store.park("other", "order-4", NOW, 4)
        keys = {f"order-{n}" for n in range(100)}
        store.parked("relay_orders", keys)  # the SDK reads the container's metadata once
        before = transport.requests

        found = store.parked("relay_orders", keys)

        assert transport.requests - before == 1
        assert found == {"order-3": 3, "order-50": 50, "order-97": 97}
    finally:
        client.delete_database(database)
