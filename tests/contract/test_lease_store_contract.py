"""One contract, two lease stores: in memory, and Cosmos DB on the local server (real SDK).

What the processor relies on: prefix listing, create-once, etag-guarded replace (a stale
writer gets LeaseLostError), delete, and the lifecycle rules of LeaseManager on top.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.cosmos import DatabaseProxy, PartitionKey

from events.adapters.cosmos.changefeed import CosmosLeaseStore
from events.changefeed import FeedRange, InMemoryLeaseStore, Lease, LeaseManager, LeaseStore
from events.changefeed.errors import LeaseLostError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WHOLE = FeedRange("", "FF")


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> LeaseStore:
    if request.param == "memory":
        return InMemoryLeaseStore()
    database: DatabaseProxy = request.getfixturevalue("cosmos_database")
    container = database.create_container(
        id=f"leases-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/id")
    )
    return CosmosLeaseStore(container)


def _lease(lease_id: str, feed_range: FeedRange = WHOLE) -> Lease:
    return Lease(
        id=lease_id, processor="p.", feed_range=feed_range, start_from="beginning", timestamp=T0
    )


def _manager(store: LeaseStore, instance_id: str, clock: list[datetime]) -> LeaseManager:
    return LeaseManager(
        store,
        prefix="p.",
        instance_id=instance_id,
        lease_duration=timedelta(seconds=5),
        clock=lambda: clock[0],
    )


def test_lease_store_create_then_list_by_prefix_only_that_prefix(store: LeaseStore) -> None:
    store.create(_lease("p.a"))
    store.create(_lease("p.b"))
    store.create(_lease("q.a"))

    assert [lease.id for lease in store.list("p.")] == ["p.a", "p.b"]
    assert store.get("q.a") is not None
    assert store.get("missing") is None


def test_lease_store_create_existing_id_raises_lease_lost(store: LeaseStore) -> None:
    store.create(_lease("p.a"))

    with pytest.raises(LeaseLostError):
        store.create(_lease("p.a"))


def test_lease_store_replace_with_stale_etag_raises_lease_lost(store: LeaseStore) -> None:
    created = store.create(_lease("p.a"))
    store.replace(Lease(**{**created.__dict__, "continuation": "1"}))

    with pytest.raises(LeaseLostError):
        store.replace(Lease(**{**created.__dict__, "continuation": "2"}))

    assert store.get("p.a").continuation == "1"  # type: ignore[union-attr]


def test_lease_store_replace_returns_new_etag_usable_for_next_write(store: LeaseStore) -> None:
    created = store.create(_lease("p.a"))
    first = store.replace(Lease(**{**created.__dict__, "owner": "x"}))
    second = store.replace(Lease(**{**first.__dict__, "continuation": "9"}))

    assert first.etag != created.etag
    assert (second.owner, second.continuation) == ("x", "9")


def test_lease_store_delete_removes_and_tolerates_missing(store: LeaseStore) -> None:
    created = store.create(_lease("p.a"))
    store.delete(created)
    store.delete(created)

    assert store.list("p.") == []


def test_lease_manager_only_one_of_two_instances_acquires_single_lease(store: LeaseStore) -> None:
    clock = [T0]
    a, b = _manager(store, "a", clock), _manager(store, "b", clock)
    a.ensure([WHOLE], "beginning")
    b.ensure([WHOLE], "beginning")

    got_a = a.balance()
    got_b = b.balance()

    assert [lease.id for lease in got_a] == ["p.00-FF"]
    assert got_b == []
    assert len(store.list("p.")) == 1


def test_lease_manager_expired_lease_taken_over_and_old_owner_loses(store: LeaseStore) -> None:
    clock = [T0]
    a, b = _manager(store, "a", clock), _manager(store, "b", clock)
    a.ensure([WHOLE], "beginning")
    (held,) = a.balance()
    held = a.checkpoint(held, "5")

    clock[0] = T0 + timedelta(seconds=6)
    (taken,) = b.balance()

    with pytest.raises(LeaseLostError):
        a.checkpoint(held, "6")
    assert (taken.owner, taken.continuation) == ("b", "5")


def test_lease_manager_release_frees_lease_and_keeps_checkpoint(store: LeaseStore) -> None:
    clock = [T0]
    a = _manager(store, "a", clock)
    a.ensure([WHOLE], "beginning")
    (held,) = a.balance()

    released = a.release(held, "7")

    stored = store.get("p.00-FF")
    assert released is not None
    assert stored is not None
    assert (stored.owner, stored.expires_at, stored.continuation) == (None, None, "7")
    assert stored.is_free(T0)


def test_lease_manager_ensure_skips_ranges_overlapping_existing_leases(store: LeaseStore) -> None:
    clock = [T0]
    a = _manager(store, "a", clock)
    a.ensure([WHOLE], "beginning")

    a.ensure([FeedRange("", "80"), FeedRange("80", "FF")], "beginning")  # a split, seen later

    assert [lease.feed_range for lease in store.list("p.")] == [WHOLE]
