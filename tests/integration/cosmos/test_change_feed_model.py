"""The local server's change feed against a model, over arbitrary histories.

The server keeps an LSN-ordered index of each container's documents so that a page costs what
it returns (devstack/cosmos/lib/feed-index.js). The paths that put documents back without a new
LSN (a transactional batch's commit and rollback, a stored procedure's rollback) and the writes
that leave stale entries behind (overwrites, deletes) are exactly where an index goes wrong, so
hypothesis mixes them freely, takes continuations at arbitrary points and drains the feed from
them, whole and per feed range, in pages of any size. The model: from a continuation, the feed
returns each document whose last committed write came after it, once, in its latest version,
in the order of those writes; a transaction's writes are never split across a continuation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosBatchOperationError, CosmosHttpResponseError
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

IDS = [f"d{i}" for i in range(8)]
FAILING_SPROC = (
    "function write(doc) {"
    " var collection = getContext().getCollection();"
    " collection.upsertDocument(collection.getSelfLink(), doc, function (err) {"
    "  if (err) throw err; });"
    " throw new Error('rolled back'); }"
)


def pk_of(item_id: str) -> str:
    return f"p{int(item_id[1:]) % 3}"


same_pk_ids = st.sampled_from(["p0", "p1", "p2"]).flatmap(
    lambda pk: st.lists(st.sampled_from([i for i in IDS if pk_of(i) == pk]), min_size=1, max_size=3)
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.sampled_from(IDS)),
        st.tuples(st.just("delete"), st.sampled_from(IDS)),
        st.tuples(st.just("batch"), same_pk_ids, st.booleans()),
        st.tuples(st.just("sproc-rollback"), st.sampled_from(IDS)),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("read"), st.integers(1, 4), st.integers(0, 20), st.booleans()),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Model:
    """What the feed must hold: the committed transaction and version of each live document."""

    transaction: int = 0
    version: int = 0
    latest: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (continuation or None for the beginning, the last transaction it has seen)
    checkpoints: list[tuple[str | None, int]] = field(default_factory=lambda: [(None, 0)])

    def commit(self, item_ids: list[str]) -> dict[str, int]:
        self.transaction += 1
        versions: dict[str, int] = {}
        for item_id in item_ids:
            self.version += 1
            versions[item_id] = self.version
            self.latest[item_id] = (self.transaction, self.version)
        return versions

    def expected_after(self, seen: int) -> list[tuple[int, str, int]]:
        return sorted(
            (transaction, item_id, version)
            for item_id, (transaction, version) in self.latest.items()
            if transaction > seen
        )


@pytest.fixture(scope="module")
def client(partitioned_cosmos_client: CosmosClient) -> CosmosClient:
    return partitioned_cosmos_client


def now_continuation(container: ContainerProxy) -> str:
    list(container.query_items_change_feed(start_time="Now"))
    etag: str = container.client_connection.last_response_headers["etag"]
    return etag


def drain(
    container: ContainerProxy, continuation: str | None, page: int, **scope: Any
) -> list[dict[str, Any]]:
    """Every item from the beginning (``continuation`` None) or from a continuation, read in
    pages of ``page``."""
    if continuation is None:
        feed = container.query_items_change_feed(
            start_time="Beginning", max_item_count=page, **scope
        )
    else:
        feed = container.query_items_change_feed(continuation=continuation, max_item_count=page)
    return [item for items in feed.by_page() for item in items]


def run(container: ContainerProxy, model: Model, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "upsert":
        item_id = step[1]
        version = model.commit([item_id])[item_id]
        container.upsert_item({"id": item_id, "pk": pk_of(item_id), "version": version})
    elif kind == "delete":
        item_id = step[1]
        if item_id in model.latest:
            container.delete_item(item_id, partition_key=pk_of(item_id))
            model.transaction += 1
            del model.latest[item_id]
    elif kind == "batch":
        item_ids, fails = list(dict.fromkeys(step[1])), step[2]
        pk = pk_of(item_ids[0])
        if fails:
            version = model.version + 1  # never committed
            failing: list[Any] = [
                ("upsert", ({"id": i, "pk": pk, "version": version},)) for i in item_ids
            ]
            failing.append(("replace", (f"missing-{uuid.uuid4().hex}", {"id": "x", "pk": pk})))
            with pytest.raises(CosmosBatchOperationError):
                container.execute_item_batch(batch_operations=failing, partition_key=pk)
        else:
            versions = model.commit(item_ids)
            container.execute_item_batch(
                batch_operations=[
                    ("upsert", ({"id": i, "pk": pk, "version": versions[i]},)) for i in item_ids
                ],
                partition_key=pk,
            )
    elif kind == "sproc-rollback":
        item_id = step[1]
        with pytest.raises(CosmosHttpResponseError):
            container.scripts.execute_stored_procedure(
                "write",
                params=[{"id": item_id, "pk": pk_of(item_id), "version": -1}],
                partition_key=pk_of(item_id),
            )
    elif kind == "checkpoint":
        model.checkpoints.append((now_continuation(container), model.transaction))


def check_read(
    container: ContainerProxy, model: Model, page: int, which: int, ranges: bool
) -> None:
    if ranges:
        # Every feed range from the beginning: together, every live document exactly once.
        got: list[dict[str, Any]] = []
        for feed_range in container.read_feed_ranges():
            part = drain(container, None, page, feed_range=feed_range)
            assert_ordered(part, model)
            got.extend(part)
        expected = model.expected_after(0)
    else:
        continuation, seen = model.checkpoints[which % len(model.checkpoints)]
        got = drain(container, continuation, page)
        assert_ordered(got, model)
        expected = model.expected_after(seen)
    assert sorted((item["id"], item["version"]) for item in got) == sorted(
        (item_id, version) for _, item_id, version in expected
    )


def assert_ordered(items: list[dict[str, Any]], model: Model) -> None:
    """Each document once; per partition key value (the order Cosmos DB promises, across a
    container's feed ranges too) in the order of their transactions and LSNs."""
    assert len({item["id"] for item in items}) == len(items)
    for pk in {item["pk"] for item in items}:
        mine = [item for item in items if item["pk"] == pk]
        transactions = [model.latest[item["id"]][0] for item in mine]
        lsns = [item["_lsn"] for item in mine]
        assert transactions == sorted(transactions)
        assert lsns == sorted(lsns)


@settings(max_examples=40, deadline=None)
@given(steps=operations)
def test_change_feed_from_any_continuation_matches_the_model(
    client: CosmosClient, steps: list[tuple[Any, ...]]
) -> None:
    database = client.create_database_if_not_exists(id="change-feed-model")
    container = database.create_container(
        id=f"c-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/pk")
    )
    try:
        container.scripts.create_stored_procedure({"id": "write", "body": FAILING_SPROC})
        model = Model()
        for step in steps:
            if step[0] == "read":
                check_read(container, model, step[1], step[2], step[3])
            else:
                run(container, model, step)
        for which in range(len(model.checkpoints)):
            check_read(container, model, 2, which, False)
    finally:
        database.delete_container(container)
