"""Lease rules without I/O: document format, overlap, fair share, lifecycle over the fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.changefeed import FeedRange, InMemoryLeaseStore, Lease, LeaseManager, fair_share
from events.changefeed.errors import LeaseLostError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _lease(n: int, owner: str | None = None, expires: datetime | None = None) -> Lease:
    return Lease(
        id=f"p.{n}",
        processor="p.",
        feed_range=FeedRange(f"{n:02X}", f"{n + 1:02X}"),
        start_from="beginning",
        timestamp=T0,
        owner=owner,
        expires_at=expires,
    )


def test_lease_document_round_trip_keeps_every_field() -> None:
    lease = _lease(3, owner="a", expires=T0 + timedelta(seconds=5))
    lease = Lease(**{**lease.__dict__, "continuation": "42", "start_from": T0})

    document = lease.to_document()
    restored = Lease.from_document(document)

    assert document["id"] == "p.3"
    assert document["feedRange"] == {"min": "03", "max": "04"}
    assert document["expiresAt"] == "2026-01-01T12:00:05+00:00"
    assert restored == lease


def test_feed_range_overlaps_neighbours_do_not_overlap() -> None:
    whole = FeedRange("", "FF")
    left, right = FeedRange("", "80"), FeedRange("80", "FF")

    assert whole.overlaps(left)
    assert right.overlaps(whole)
    assert not left.overlaps(right)
    assert whole.key == "00-FF"


def test_fair_share_free_leases_taken_up_to_target() -> None:
    leases = [_lease(i) for i in range(4)] + [
        _lease(i, "other", T0 + timedelta(seconds=9)) for i in range(4, 6)
    ]

    taken = fair_share(leases, "me", T0)

    assert [lease.id for lease in taken] == ["p.0", "p.1", "p.2"]


def test_fair_share_nothing_free_steals_one_from_overloaded_owner() -> None:
    live = T0 + timedelta(seconds=9)
    leases = [_lease(i, "big", live) for i in range(3)] + [_lease(3, "me", live)]

    taken = fair_share(leases, "me", T0)

    assert [lease.owner for lease in taken] == ["big"]


def test_fair_share_single_range_second_instance_takes_nothing() -> None:
    leases = [_lease(0, "first", T0 + timedelta(seconds=9))]

    assert fair_share(leases, "second", T0) == []


def test_fair_share_expired_lease_is_free() -> None:
    leases = [_lease(0, "dead", T0 - timedelta(seconds=1))]

    assert [lease.id for lease in fair_share(leases, "me", T0)] == ["p.0"]


def test_lease_manager_stale_etag_raises_lease_lost() -> None:
    store = InMemoryLeaseStore()
    clock = [T0]
    manager = LeaseManager(
        store,
        prefix="p.",
        instance_id="a",
        lease_duration=timedelta(seconds=5),
        clock=lambda: clock[0],
    )
    (lease,) = manager.ensure([FeedRange("", "FF")], "beginning")
    mine = manager.acquire(lease)
    manager.checkpoint(mine, "7")

    with pytest.raises(LeaseLostError):
        manager.checkpoint(mine, "8")  # the etag of `mine` is stale now

    assert store.get("p.00-FF") is not None
    assert store.get("p.00-FF").continuation == "7"  # type: ignore[union-attr]


def test_lease_manager_ensure_now_records_creation_time() -> None:
    store = InMemoryLeaseStore()
    manager = LeaseManager(
        store, prefix="p.", instance_id="a", lease_duration=timedelta(seconds=5), clock=lambda: T0
    )

    (lease,) = manager.ensure([FeedRange("", "FF")], "now")

    assert lease.start_from == T0
    assert lease.position == T0
