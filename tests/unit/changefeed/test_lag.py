"""Lag per lease: changes pending after the checkpoint and how long the oldest has waited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from events.changefeed import InMemoryChangeFeed, InMemoryLeaseStore
from events.changefeed.feed import FeedRange
from events.changefeed.lag import estimate_lag, measure_lag
from events.changefeed.leases import Lease
from tests.clock import ManualClock

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _lease(store: InMemoryLeaseStore, continuation: str | None, owner: str | None = "a") -> None:
    store.create(
        Lease(
            id="p.00-FF",
            processor="p.",
            feed_range=FeedRange("", "FF"),
            start_from="beginning",
            timestamp=START,
            owner=owner,
            continuation=continuation,
        )
    )


def test_measure_lag_time_behind_is_the_age_of_the_oldest_pending_change() -> None:
    clock = ManualClock(START)
    feed, store = InMemoryChangeFeed(clock=clock), InMemoryLeaseStore()
    checkpoint = str(feed.write({"id": "handled"}, "k"))
    clock.advance(10)
    feed.write({"id": "oldest"}, "k")
    clock.advance(30)
    feed.write({"id": "newest"}, "k")
    clock.advance(5)
    _lease(store, checkpoint)

    [row] = measure_lag(feed, store, "p.", clock=clock)

    assert (row.lease, row.owner, row.pending, row.capped) == ("p.00-FF", "a", 2, False)
    assert row.oldest == START + timedelta(seconds=10)
    assert row.seconds_behind == 35.0


def test_measure_lag_caught_up_is_zero_changes_and_zero_seconds() -> None:
    clock = ManualClock(START)
    feed, store = InMemoryChangeFeed(clock=clock), InMemoryLeaseStore()
    last = str(feed.write({"id": "d1"}, "k"))
    clock.advance(100)
    _lease(store, last, owner=None)

    [row] = measure_lag(feed, store, "p.", clock=clock)

    assert (row.pending, row.seconds_behind, row.oldest, row.owner) == (0, 0.0, None, None)


def test_measure_lag_at_the_limit_says_capped() -> None:
    feed, store = InMemoryChangeFeed(), InMemoryLeaseStore()
    for n in range(7):
        feed.write({"id": f"d{n}"}, "k")
    _lease(store, None)

    [row] = measure_lag(feed, store, "p.", page_size=2, limit=5)

    assert (row.pending, row.capped) == (5, True)


def test_measure_lag_reads_without_moving_the_checkpoint() -> None:
    feed, store = InMemoryChangeFeed(), InMemoryLeaseStore()
    feed.write({"id": "d1"}, "k")
    _lease(store, None)

    measure_lag(feed, store, "p.")

    lease = store.get("p.00-FF")
    assert lease is not None
    assert lease.continuation is None
    assert estimate_lag(feed, store, "p.") == {"p.00-FF": 1}


@settings(max_examples=50, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 50)),
        min_size=1,
        max_size=30,
    ),
    handled=st.integers(0, 30),
    page_size=st.integers(1, 7),
)
def test_measure_lag_any_history_counts_distinct_documents_changed_after_the_checkpoint(
    writes: list[tuple[str, int]], handled: int, page_size: int
) -> None:
    clock = ManualClock(START)
    feed, store = InMemoryChangeFeed(clock=clock), InMemoryLeaseStore()
    stamps: dict[str, datetime] = {}
    checkpoint = "0"
    for index, (doc_id, pause) in enumerate(writes):
        clock.advance(pause)
        lsn = feed.write({"id": doc_id}, doc_id)
        if index < handled:
            checkpoint = str(lsn)
        stamps[doc_id] = clock.now.replace(microsecond=0)
    pending_ids = {doc_id for doc_id, _ in writes[handled:]}
    clock.advance(3)
    _lease(store, checkpoint)

    [row] = measure_lag(feed, store, "p.", page_size=page_size, clock=clock)

    assert row.pending == len(pending_ids)
    if pending_ids:
        oldest = min(stamps[d] for d in pending_ids)
        assert row.oldest == oldest
        assert row.seconds_behind == (clock.now - oldest).total_seconds()
    else:
        assert row.seconds_behind == 0.0
