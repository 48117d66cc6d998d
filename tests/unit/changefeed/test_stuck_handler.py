"""A handler that never returns: its processor stops renewing the lease after
``handler_timeout`` and another instance takes the feed range over (in-memory feed and lease
store, injected clock; real threads, every wait bounded)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.changefeed import ChangeFeedProcessor, InMemoryChangeFeed, InMemoryLeaseStore
from events.changefeed.leases import Lease
from events.fencing import check_fence
from tests.clock import ManualClock

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_ID = "p.00-FF"
BOUND = 30.0  # seconds any wait in this test may take at most


def _until(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` for at most BOUND seconds (a bound, not a timing assertion)."""
    give_up = time.monotonic() + BOUND
    while time.monotonic() < give_up:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _processor(
    feed: InMemoryChangeFeed,
    store: InMemoryLeaseStore,
    handler: Callable[[list[dict[str, Any]]], object],
    clock: ManualClock,
    instance_id: str,
    handler_timeout: float = 5.0,
) -> ChangeFeedProcessor:
    return ChangeFeedProcessor(
        feed,
        store,
        handler,
        name="p.",
        instance_id=instance_id,
        poll_interval=0.01,
        lease_duration=10.0,
        renew_interval=0.5,  # the renewer thread wakes every 0.25 s of real time
        acquire_interval=1.0,
        handler_timeout=handler_timeout,
        clock=clock,
    )


def _lease(store: InMemoryLeaseStore) -> Lease:
    lease = store.get(LEASE_ID)
    assert lease is not None
    return lease


def test_processor_stuck_handler_stops_renewing_and_second_instance_takes_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    feed.write({"id": "d1", "pk": "d1"}, partition_key="d1")
    entered, release = threading.Event(), threading.Event()

    def stuck(documents: list[dict[str, Any]]) -> None:
        entered.set()
        release.wait(BOUND)

    taken_over: list[str] = []
    first = _processor(feed, store, stuck, clock, "a")
    second = _processor(
        feed, store, lambda docs: taken_over.extend(d["id"] for d in docs), clock, "b"
    )
    caplog.set_level(logging.INFO, logger="events.changefeed.processor")
    stop = threading.Event()
    runner = threading.Thread(target=first.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert entered.wait(BOUND), "the handler was never called"

        # Within handler_timeout the lease is still renewed.
        clock.advance(1)
        assert _until(lambda: _lease(store).expires_at == T0 + timedelta(seconds=11))

        # Past handler_timeout: no renewal, one WARNING naming the lease.
        clock.advance(5)
        assert _until(
            lambda: any(
                r.levelno == logging.WARNING and LEASE_ID in r.getMessage() for r in caplog.records
            )
        )
        clock.advance(1)
        assert not _until_renewed_beyond(store, T0 + timedelta(seconds=11))

        # Expired: the second instance acquires the lease and handles the page.
        clock.advance(5)
        second.run_once()
        assert taken_over == ["d1"]
        assert _lease(store).owner == "b"
    finally:
        release.set()
        stop.set()
        runner.join(BOUND)
    assert not runner.is_alive()
    # The stuck instance's late checkpoint lost against the new owner: it holds nothing.
    assert first.owned_leases == []
    assert _lease(store).owner in ("b", None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "handler_timeout" in w]) == 1


def _until_renewed_beyond(store: InMemoryLeaseStore, expiry: datetime) -> bool:
    """True if the lease gets renewed past ``expiry`` within a short real-time window (four
    renewer periods): the stuck instance must not renew."""
    give_up = time.monotonic() + 1.0
    while time.monotonic() < give_up:
        current = _lease(store).expires_at
        if current is not None and current > expiry:
            return True
        time.sleep(0.01)
    return False


class _PausingFeed(InMemoryChangeFeed):
    """A feed whose next read takes ``pause`` seconds of the injected clock: the process was
    stopped (SIGSTOP, a VM pause) between reading a page and handling it."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock_to_advance = clock
        self.pause = 0.0

    def read_page(self, feed_range: Any, position: Any, max_items: int) -> Any:
        page = super().read_page(feed_range, position, max_items)
        if page.items and self.pause:
            self.clock_to_advance.advance(self.pause)
            self.pause = 0.0
        return page


def test_processor_page_read_before_its_lease_expired_is_not_handled_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, store = ManualClock(T0), InMemoryLeaseStore()
    feed = _PausingFeed(clock)
    handled: list[str] = []
    first = _processor(feed, store, lambda docs: handled.extend(d["id"] for d in docs), clock, "a")
    first.run_once()  # acquires the lease; nothing to read yet
    feed.write({"id": "d1", "pk": "d1"}, partition_key="d1")
    feed.pause = 11.0  # longer than the 10 s lease
    caplog.set_level(logging.WARNING, logger="events.changefeed")

    first.run_once()

    assert handled == []
    assert first.owned_leases == []
    assert any(
        "lease expired before its page was handled" in r.getMessage() for r in caplog.records
    )
    second = _processor(feed, store, lambda docs: handled.extend(d["id"] for d in docs), clock, "b")
    second.run_once()
    assert handled == ["d1"]


def test_processor_handler_paused_past_its_lease_is_fenced_at_its_next_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    feed.write({"id": "d1", "pk": "d1"}, partition_key="d1")
    sent: list[str] = []
    calls = 0

    def pausing(documents: list[dict[str, Any]]) -> None:
        # Two sends; the process is stopped for 11 s (the lease is 10 s) between them.
        nonlocal calls
        calls += 1
        check_fence()
        sent.append("first")
        clock.advance(11)
        check_fence()
        sent.append("second")

    first = _processor(feed, store, pausing, clock, "a")
    caplog.set_level(logging.WARNING, logger="events.changefeed")

    assert first.run_once() == 0

    assert (sent, calls) == (["first"], 1)  # not retried: the page is the next owner's
    assert first.owned_leases == []
    assert any("handler fenced out" in r.getMessage() for r in caplog.records)
    assert _lease(store).continuation is None  # no checkpoint for the fenced page
    taken_over: list[str] = []
    second = _processor(
        feed, store, lambda docs: taken_over.extend(d["id"] for d in docs), clock, "b"
    )
    second.run_once()
    assert taken_over == ["d1"]


def test_processor_fence_reads_the_renewed_lease_not_the_one_the_call_began_with() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    feed.write({"id": "d1", "pk": "d1"}, partition_key="d1")
    passed: list[datetime] = []

    def slow(documents: list[dict[str, Any]]) -> None:
        # 12 s of sends in all, more than the 10 s lease; the renewer keeps it ahead.
        for _ in range(3):
            clock.advance(4)
            renewed = _lease(store).expires_at
            assert _until(lambda: _lease(store).expires_at != renewed)  # noqa: B023 - awaited here
            check_fence()
            passed.append(clock())

    processor = _processor(feed, store, slow, clock, "a", handler_timeout=60.0)
    stop = threading.Event()
    runner = threading.Thread(target=processor.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert _until(lambda: len(passed) == 3)
        assert _until(lambda: _lease(store).continuation is not None)
    finally:
        stop.set()
        runner.join(BOUND)
    assert not runner.is_alive()
    assert passed[-1] - T0 >= timedelta(seconds=12)


def test_processor_fence_refuses_once_the_lease_is_no_longer_held_before_it_expires() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    feed.write({"id": "d1", "pk": "d1"}, partition_key="d1")
    sent: list[str] = []
    processor: ChangeFeedProcessor | None = None

    def losing(documents: list[dict[str, Any]]) -> None:
        assert processor is not None
        processor.release_all()  # no longer held, as after a renewal that found it taken
        check_fence()
        sent.append("sent")

    processor = _processor(feed, store, losing, clock, "a")

    processor.run_once()

    assert sent == []
