"""ChangeFeedProcessor with the in-memory feed and lease store, an injected clock and sleep."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.changefeed import (
    Backoff,
    ChangeFeedProcessor,
    InMemoryChangeFeed,
    InMemoryLeaseStore,
    estimate_lag,
)
from events.changefeed.feed import ChangeFeed, FeedRange, Page, Position, StartFrom
from events.changefeed.leases import Lease
from events.errors import PublishUnavailableError, StoreUnavailableError
from tests.clock import ManualClock

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_ID = "p.00-FF"


class Recorder:
    """A handler that keeps the ids it got, and can fail a number of times first."""

    def __init__(self, fail_times: int = 0, error: Exception | None = None) -> None:
        self.ids: list[str] = []
        self.calls = 0
        self.fail_times = fail_times
        self.error = error or PublishUnavailableError("service bus down")
        self.seen_checkpoints: list[str | None] = []
        self.store: InMemoryLeaseStore | None = None

    def __call__(self, documents: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.store is not None:
            lease = self.store.get(LEASE_ID)
            self.seen_checkpoints.append(lease.continuation if lease else None)
        if self.calls <= self.fail_times:
            raise self.error
        self.ids.extend(str(d["id"]) for d in documents)


def _processor(
    feed: ChangeFeed,
    store: InMemoryLeaseStore,
    handler: Recorder,
    clock: ManualClock,
    *,
    instance_id: str = "a",
    start_from: StartFrom = "beginning",
    sleeps: list[float] | None = None,
    max_items: int = 100,
) -> ChangeFeedProcessor:
    recorded = sleeps if sleeps is not None else []
    return ChangeFeedProcessor(
        feed,
        store,
        handler,
        name="p.",
        instance_id=instance_id,
        start_from=start_from,
        max_items=max_items,
        lease_duration=10.0,
        renew_interval=3.0,
        acquire_interval=1.0,
        backoff=Backoff(initial=1.0, maximum=4.0),
        clock=clock,
        sleep=recorded.append,
    )


def _write(feed: InMemoryChangeFeed, *ids: str) -> None:
    for doc_id in ids:
        feed.write({"id": doc_id, "pk": doc_id}, partition_key=doc_id)


def test_backoff_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0)

    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_processor_handler_succeeds_checkpoint_written_after_handler() -> None:
    clock, feed, store = (
        ManualClock(T0),
        InMemoryChangeFeed(clock=ManualClock(T0)),
        InMemoryLeaseStore(),
    )
    _write(feed, "d1", "d2", "d3")
    handler = Recorder()
    handler.store = store

    handled = _processor(feed, store, handler, clock, max_items=2).run_once()

    lease = store.get(LEASE_ID)
    assert handled == 2
    assert handler.ids == ["d1", "d2"]
    assert handler.seen_checkpoints == [None]  # nothing was checkpointed before the handler ran
    assert lease is not None
    assert lease.continuation == "2"
    assert lease.owner == "a"


def test_processor_transient_failure_retried_with_backoff_checkpoint_unchanged() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1")
    processor = _processor(feed, store, Recorder(), clock, max_items=1)
    processor.run_once()
    _write(feed, "d2", "d3")
    handler = Recorder(fail_times=3)
    handler.store = store
    sleeps: list[float] = []
    processor = _processor(feed, store, handler, clock, sleeps=sleeps, max_items=5)

    handled = processor.run_once()

    assert sleeps == [1.0, 2.0, 4.0]
    assert handler.seen_checkpoints == ["1", "1", "1", "1"]
    assert handler.ids == ["d2", "d3"]
    assert handled == 2
    assert store.get(LEASE_ID).continuation == "3"  # type: ignore[union-attr]


def test_processor_permanent_failure_is_retried_too() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1")
    handler = Recorder(fail_times=1, error=ValueError("bug"))

    handled = _processor(feed, store, handler, clock).run_once()

    assert handled == 1
    assert handler.calls == 2
    assert handler.ids == ["d1"]


def test_processor_stop_while_retrying_abandons_batch_without_checkpoint() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1", "d2")
    handler = Recorder(fail_times=1_000)
    processor = _processor(feed, store, handler, clock)

    def sleep_then_stop(seconds: float) -> None:
        if handler.calls >= 3:
            processor.stop()

    processor._sleep = sleep_then_stop  # the stop arrives while the handler is being retried

    handled = processor.run_once()
    processor.release_all()

    lease = store.get(LEASE_ID)
    assert handled == 0
    assert handler.calls == 3
    assert lease is not None
    assert lease.continuation is None
    assert lease.owner is None


def test_processor_lease_expired_other_instance_takes_over_from_checkpoint() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1", "d2")
    first, second = Recorder(), Recorder()
    a = _processor(feed, store, first, clock, instance_id="a")
    b = _processor(feed, store, second, clock, instance_id="b")
    a.run_once()
    b.run_once()
    assert (a.owned_leases, b.owned_leases) == ([LEASE_ID], [])
    _write(feed, "d3")

    clock.advance(11)  # "a" died: no renewal for longer than the lease duration
    b.run_once()
    a.run_once()  # "a" comes back: its renewal loses against "b"

    assert first.ids == ["d1", "d2"]
    assert second.ids == ["d3"]
    assert (a.owned_leases, b.owned_leases) == ([], [LEASE_ID])
    assert store.get(LEASE_ID).owner == "b"  # type: ignore[union-attr]


def test_processor_two_instances_split_four_ranges_two_each() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(ranges=4), InMemoryLeaseStore()
    ids = [f"d{i}" for i in range(40)]
    _write(feed, *ids)
    first, second = Recorder(), Recorder()
    a = _processor(feed, store, first, clock, instance_id="a", max_items=3)
    b = _processor(feed, store, second, clock, instance_id="b", max_items=3)

    for _ in range(30):
        a.run_once()
        b.run_once()
        clock.advance(1.5)

    assert len(a.owned_leases) == 2
    assert len(b.owned_leases) == 2
    assert set(a.owned_leases).isdisjoint(b.owned_leases)
    handled = Counter(first.ids + second.ids)
    assert set(handled) == set(ids)
    # Only a batch in flight when a lease is stolen may be handled twice.
    assert sum(handled.values()) - len(ids) <= 3 * 2


def test_processor_start_from_now_applies_only_without_lease() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "old1", "old2")
    first = Recorder()
    a = _processor(feed, store, first, clock, start_from="now")
    a.run_once()
    _write(feed, "new1")
    a.run_once()
    a.release_all()
    _write(feed, "new2")
    second = Recorder()

    _processor(feed, store, second, clock, instance_id="b", start_from="beginning").run_once()

    assert first.ids == ["new1"]
    assert second.ids == ["new2"]


def test_processor_start_from_time_skips_older_changes() -> None:
    feed_clock = ManualClock(T0)
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(clock=feed_clock), InMemoryLeaseStore()
    _write(feed, "old")
    feed_clock.advance(60)
    _write(feed, "recent")
    handler = Recorder()

    _processor(feed, store, handler, clock, start_from=T0 + timedelta(seconds=30)).run_once()

    assert handler.ids == ["recent"]


def test_processor_run_until_stopped_releases_leases_with_checkpoint() -> None:
    feed, store = InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1", "d2")
    stop = threading.Event()
    ids: list[str] = []

    def handler(documents: list[dict[str, Any]]) -> None:
        ids.extend(str(d["id"]) for d in documents)
        stop.set()

    processor = ChangeFeedProcessor(
        feed, store, handler, name="p.", instance_id="a", poll_interval=0.01
    )
    worker = threading.Thread(target=processor.run, args=(stop,))
    worker.start()
    worker.join(timeout=10)

    lease = store.get(LEASE_ID)
    assert not worker.is_alive()
    assert ids == ["d1", "d2"]
    assert lease is not None
    assert (lease.owner, lease.expires_at, lease.continuation) == (None, None, "2")


def test_estimate_lag_counts_documents_after_checkpoint() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1", "d2")
    _processor(feed, store, Recorder(), clock).run_once()
    _write(feed, "d3", "d4", "d5")

    assert estimate_lag(feed, store, "p.", page_size=2) == {LEASE_ID: 3}


@pytest.mark.parametrize("bad", [{"renew_interval": 20.0}, {"max_items": 0}])
def test_processor_bad_settings_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        ChangeFeedProcessor(
            InMemoryChangeFeed(),
            InMemoryLeaseStore(),
            print,
            name="p.",
            lease_duration=10.0,
            **bad,
        )


def test_processor_checkpoint_interval_defers_write_until_interval_passed() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    _write(feed, "d1", "d2", "d3")
    processor = ChangeFeedProcessor(
        feed,
        store,
        Recorder(),
        name="p.",
        instance_id="a",
        max_items=1,
        lease_duration=10.0,
        renew_interval=5.0,
        checkpoint_interval=2.0,
        clock=clock,
    )
    processor.run_once()  # acquires at T0, handles d1: the lease was written just now
    deferred = store.get(LEASE_ID)
    clock.advance(2)
    processor.run_once()  # handles d2: two seconds since the last write

    assert deferred is not None
    assert deferred.continuation is None
    assert store.get(LEASE_ID).continuation == "2"  # type: ignore[union-attr]


class RecordingFeed:
    """The in-memory feed, remembering the positions pages were read from."""

    def __init__(self, feed: InMemoryChangeFeed) -> None:
        self.feed = feed
        self.positions: list[Position] = []
        self.read_again = threading.Event()

    def feed_ranges(self) -> list[FeedRange]:
        return self.feed.feed_ranges()

    def read_page(self, feed_range: FeedRange, position: Position, max_items: int) -> Page:
        self.positions.append(position)
        if len(self.positions) > 1:
            self.read_again.set()
        return self.feed.read_page(feed_range, position, max_items)


class FlakyFeed(RecordingFeed):
    """A recording feed whose first read from ``fail_at`` fails."""

    def __init__(self, feed: InMemoryChangeFeed, fail_at: Position) -> None:
        super().__init__(feed)
        self.fail_at: Position | None = fail_at

    def read_page(self, feed_range: FeedRange, position: Position, max_items: int) -> Page:
        if position == self.fail_at:
            self.fail_at = None
            self.positions.append(position)
            raise StoreUnavailableError("read change feed: Cosmos DB unreachable")
        return super().read_page(feed_range, position, max_items)


class ProcessCrashError(BaseException):
    """The process dies (not an error the processor could handle)."""


class InterferingStore(InMemoryLeaseStore):
    """A lease store that, on the write of checkpoint ``at`` by instance ``a``, either lets
    instance ``b`` take the lease first (the write then fails with 412) or crashes."""

    def __init__(self, at: str, crash: bool = False, hold: threading.Event | None = None) -> None:
        super().__init__()
        self.at = at
        self.crash = crash
        #: When given, the interfering write waits for it (so it is surely still in flight).
        self.hold = hold
        self.handled_lsn = 0
        #: (continuation written, highest LSN handled when it was written), per write of "a".
        self.writes: list[tuple[str | None, int]] = []

    def replace(self, lease: Lease) -> Lease:
        if lease.owner == "a":
            self.writes.append((lease.continuation, self.handled_lsn))
        if lease.owner == "a" and lease.continuation == self.at:
            if self.crash:
                raise ProcessCrashError
            if self.hold is not None:
                self.hold.wait(timeout=5)
            current = self.get(lease.id)
            assert current is not None
            super().replace(replace(current, owner="b", expires_at=T0 + timedelta(minutes=5)))
        return super().replace(lease)


def _run_in_thread(processor: ChangeFeedProcessor, stop: threading.Event) -> threading.Thread:
    worker = threading.Thread(target=processor.run, args=(stop,))
    worker.start()
    return worker


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_processor_run_checkpoint_never_ahead_of_handled_page_and_one_per_page() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InterferingStore(at="never")
    _write(feed, "d1", "d2", "d3", "d4", "d5")
    stop = threading.Event()

    def handler(documents: list[dict[str, Any]]) -> None:
        store.handled_lsn = int(documents[-1]["_lsn"])
        if store.handled_lsn == 5:
            stop.set()

    processor = ChangeFeedProcessor(
        feed,
        store,
        handler,
        name="p.",
        instance_id="a",
        max_items=1,
        poll_interval=0.01,
        clock=clock,
    )
    _run_in_thread(processor, stop).join(timeout=10)

    written = [(int(c), handled) for c, handled in store.writes if c is not None]
    assert all(position <= handled for position, handled in written)
    assert sorted({position for position, _ in written}) == [1, 2, 3, 4, 5]
    assert store.get(LEASE_ID).continuation == "5"  # type: ignore[union-attr]


def test_processor_checkpoint_lost_stops_lease_prefetched_page_not_handled() -> None:
    feed = RecordingFeed(InMemoryChangeFeed())
    clock, store = ManualClock(T0), InterferingStore(at="2", hold=feed.read_again)
    _write(feed.feed, "d1", "d2", "d3", "d4")
    handler = Recorder()
    stop = threading.Event()
    processor = ChangeFeedProcessor(
        feed,
        store,
        handler,
        name="p.",
        instance_id="a",
        max_items=2,
        poll_interval=0.01,
        clock=clock,
    )
    worker = _run_in_thread(processor, stop)

    _wait_for(lambda: "2" in feed.positions and not processor.owned_leases)
    stop.set()
    worker.join(timeout=10)

    lease = store.get(LEASE_ID)
    assert "2" in feed.positions  # the next page was read while page 1's checkpoint was written
    assert handler.ids == ["d1", "d2"]  # ... and dropped when that write lost the lease
    assert processor.owned_leases == []
    assert lease is not None
    assert (lease.owner, lease.continuation) == ("b", None)


def test_processor_crash_between_handler_and_checkpoint_replays_only_that_page() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InterferingStore(at="4", crash=True)
    _write(feed, "d1", "d2", "d3", "d4", "d5", "d6")
    first, second = Recorder(), Recorder()
    a = _processor(feed, store, first, clock, instance_id="a", max_items=2)
    a.run_once()  # d1, d2 handled and checkpointed

    with pytest.raises(ProcessCrashError):
        a.run_once()  # d3, d4 handled; the process dies while writing their checkpoint

    clock.advance(11)  # "a" is gone: its lease expires
    b = _processor(feed, store, second, clock, instance_id="b", max_items=2)
    b.run_once()
    b.run_once()

    assert first.ids == ["d1", "d2", "d3", "d4"]
    assert second.ids == ["d3", "d4", "d5", "d6"]


def test_processor_run_reads_next_page_while_handler_runs() -> None:
    feed = RecordingFeed(InMemoryChangeFeed())
    _write(feed.feed, "d1", "d2", "d3", "d4")
    handled: list[str] = []
    next_read_during_handler: list[bool] = []
    stop = threading.Event()

    def handler(documents: list[dict[str, Any]]) -> None:
        if not handled:
            _wait_for(lambda: "2" in feed.positions)
            next_read_during_handler.append("2" in feed.positions)
        handled.extend(str(d["id"]) for d in documents)
        if len(handled) == 4:
            stop.set()

    processor = ChangeFeedProcessor(
        feed, InMemoryLeaseStore(), handler, name="p.", max_items=2, poll_interval=0.01
    )
    _run_in_thread(processor, stop).join(timeout=10)

    assert next_read_during_handler == [True]
    assert handled == ["d1", "d2", "d3", "d4"]
    assert feed.positions.count("2") == 1


def test_processor_page_read_ahead_is_used_once_after_handler_retry() -> None:
    clock, feed, store = ManualClock(T0), RecordingFeed(InMemoryChangeFeed()), InMemoryLeaseStore()
    _write(feed.feed, "d1", "d2", "d3", "d4")
    handler, sleeps = Recorder(fail_times=1), list[float]()
    processor = _processor(feed, store, handler, clock, sleeps=sleeps, max_items=2)

    processor.run_once()  # d1, d2 fail once, then handled; d3, d4 read meanwhile
    processor.run_once()

    assert handler.ids == ["d1", "d2", "d3", "d4"]
    assert sleeps == [1.0]
    assert feed.positions.count("2") == 1
    assert store.get(LEASE_ID).continuation == "4"  # type: ignore[union-attr]


def test_processor_failed_read_ahead_is_read_again_nothing_skipped() -> None:
    clock, feed, store = (
        ManualClock(T0),
        FlakyFeed(InMemoryChangeFeed(), fail_at="2"),
        InMemoryLeaseStore(),
    )
    _write(feed.feed, "d1", "d2", "d3", "d4")
    handler = Recorder()
    processor = _processor(feed, store, handler, clock, max_items=2)

    processor.run_once()
    processor.run_once()

    assert handler.ids == ["d1", "d2", "d3", "d4"]
    assert feed.positions.count("2") == 2  # the failed read-ahead, then the read that worked
    assert store.get(LEASE_ID).continuation == "4"  # type: ignore[union-attr]
