"""A replay of a window: which changes, under which leases, resumed after a failure
(in-memory change feed, leases, publisher and quarantine)."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.changefeed import InMemoryChangeFeed, InMemoryLeaseStore
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.errors import TransientError
from events.hosts.replay import (
    Progress,
    ReplayCounts,
    Window,
    WindowReplay,
    parse_time,
    replay_prefix,
    window_warnings,
)
from tests import factories
from tests.clock import ManualClock

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PREFIX = replay_prefix("relay-orders.", T0)


def _history() -> InMemoryChangeFeed:
    """order-before at T0, order-in-1..3 at T0+10..12 s, order-after at T0+30 s; 2 ranges."""
    clock = ManualClock(T0)
    feed = InMemoryChangeFeed(ranges=2, clock=clock)
    feed.write(factories.placed("order-before", "e-0"), "order-before")
    for n in (1, 2, 3):
        clock.now = T0 + timedelta(seconds=9 + n)
        feed.write(factories.placed(f"order-in-{n}", f"e-{n}"), f"order-in-{n}")
    clock.now = T0 + timedelta(seconds=30)
    feed.write(factories.placed("order-after", "e-9"), "order-after")
    return feed


WINDOW = Window(T0 + timedelta(seconds=5), T0 + timedelta(seconds=25))
INSIDE = {factories.outbox_id(f"order-in-{n}", f"e-{n}") for n in (1, 2, 3)}


def _replay(
    feed: InMemoryChangeFeed, store: InMemoryLeaseStore, max_items: int = 100
) -> WindowReplay:
    return WindowReplay(
        feed,
        store,
        prefix=PREFIX,
        window=WINDOW,
        instance_id="replay-test",
        max_items=max_items,
        sleep=lambda _: None,
    )


def _delivered(publisher: InMemoryPublisher) -> list[str]:
    return [m.message_id for m in publisher.delivered["integration-events"]]


def test_replay_sends_exactly_the_changes_in_the_window_then_removes_its_leases() -> None:
    feed, store = _history(), InMemoryLeaseStore()
    publisher = InMemoryPublisher(["integration-events", "payments"])
    replay = _replay(feed, store, max_items=1)
    sent = ReplayCounts()

    replay.run(
        factories.orders_relay(publisher, InMemoryQuarantine()), sent, Progress(3, io.StringIO())
    )
    leases_during = [lease.id for lease in store.list(PREFIX)]
    removed = replay.clean_up()

    assert sorted(_delivered(publisher)) == sorted(INSIDE)
    assert (sent.documents, sent.events, sent.quarantined) == (3, 3, 0)
    assert len(leases_during) == 2  # one per feed range, under the replay's own prefix
    assert all(
        lease_id.startswith("replay-20261201T090000Z.relay-orders.") for lease_id in leases_during
    )
    assert removed == 2
    assert store.list("") == []


def test_replay_count_matches_what_run_sends_and_sends_nothing_itself() -> None:
    feed, store = _history(), InMemoryLeaseStore()
    dry = InMemoryPublisher(["integration-events", "payments"])
    counted = ReplayCounts()

    _replay(feed, store).count(factories.orders_relay(dry, InMemoryQuarantine()), counted)

    assert (counted.documents, counted.events) == (3, 3)
    assert store.list("") == []  # a count creates no lease


def test_replay_failing_beyond_retries_keeps_leases_and_resume_sends_only_the_rest() -> None:
    feed, store = _history(), InMemoryLeaseStore()
    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = factories.orders_relay(publisher, InMemoryQuarantine())
    publisher.fail_on_send(*range(2, 20))  # the first page goes out, then Service Bus is down

    with pytest.raises(TransientError):
        _replay(feed, store, max_items=1).run(relay, ReplayCounts(), Progress(3, io.StringIO()))
    first = list(_delivered(publisher))
    checkpointed = [lease for lease in store.list(PREFIX) if lease.continuation is not None]
    publisher = InMemoryPublisher(["integration-events", "payments"])
    resumed = ReplayCounts()
    _replay(feed, store, max_items=1).run(
        factories.orders_relay(publisher, InMemoryQuarantine()), resumed, Progress(2, io.StringIO())
    )

    assert len(first) == 1
    assert checkpointed
    assert sorted(first + _delivered(publisher)) == sorted(INSIDE)
    assert resumed.documents == 2


@pytest.mark.parametrize(
    ("age", "sources", "expected"),
    [
        (timedelta(minutes=10), ("outbox", "cdc"), []),
        (timedelta(hours=2), ("outbox", "cdc"), ["duplicate-detection"]),
        (timedelta(days=11), ("outbox", "cdc"), ["outbox TTL", "duplicate-detection"]),
        (timedelta(days=11), ("eventstore",), ["duplicate-detection"]),
    ],
)
def test_window_warnings_by_age_and_sources(
    age: timedelta, sources: tuple[str, ...], expected: list[str]
) -> None:
    warnings = window_warnings(factories.DEPLOYMENT.topology, sources, T0 - age, T0)

    assert len(warnings) == len(expected)
    for warning, phrase in zip(warnings, expected, strict=True):
        assert phrase in warning


def test_replay_prefix_never_starts_or_is_started_by_a_declared_prefix() -> None:
    for definition in factories.DEPLOYMENT.feeds:
        prefix = replay_prefix(definition.lease_prefix, T0)
        for other in factories.DEPLOYMENT.feeds:
            assert not prefix.startswith(other.lease_prefix)
            assert not other.lease_prefix.startswith(prefix)


def test_window_until_must_follow_since() -> None:
    with pytest.raises(ValueError, match="later"):
        Window(T0, T0)


def test_progress_not_a_terminal_prints_a_line_per_tenth() -> None:
    out = io.StringIO()
    progress = Progress(20, out, tty=False)

    for _ in range(20):
        progress.advance(1)
    progress.finish()

    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[-1] == "replay progress 20/20 documents 100%"


def test_progress_on_a_terminal_redraws_one_bar_in_place() -> None:
    out = io.StringIO()
    progress = Progress(4, out, tty=True)

    progress.advance(2)
    progress.advance(2)
    progress.finish()

    text = out.getvalue()
    assert text.count("\r") == 2
    assert text.endswith("] 4/4 documents 100%\n")
    assert "[###############...............] 2/4" in text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_time_any_text_is_an_aware_time_or_an_argument_error(text: str) -> None:
    try:
        moment = parse_time(text)
    except argparse.ArgumentTypeError as exc:
        message = str(exc)
        moment = None
    else:
        message = ""
    assert (moment is not None and moment.tzinfo is not None) or repr(text) in message


@settings(max_examples=100, deadline=None)
@given(
    since=st.integers(0, 40),
    length=st.integers(1, 40),
    stamps=st.lists(st.integers(0, 45), min_size=1, max_size=12),
)
def test_replay_any_window_sends_exactly_the_documents_whose_ts_is_inside(
    since: int, length: int, stamps: list[int]
) -> None:
    clock = ManualClock(T0)
    feed, store = InMemoryChangeFeed(ranges=3, clock=clock), InMemoryLeaseStore()
    expected = set()
    for n, offset in enumerate(sorted(stamps)):
        clock.now = T0 + timedelta(seconds=offset)
        feed.write(factories.placed(f"order-{n}", f"e-{n}"), f"order-{n}")
        if since <= offset < since + length:
            expected.add(factories.outbox_id(f"order-{n}", f"e-{n}"))
    window = Window(T0 + timedelta(seconds=since), T0 + timedelta(seconds=since + length))
    publisher = InMemoryPublisher(["integration-events", "payments"])
    replay = WindowReplay(
        feed,
        store,
        prefix=PREFIX,
        window=window,
        instance_id="r",
        max_items=2,
        sleep=lambda _: None,
    )

    replay.run(
        factories.orders_relay(publisher, InMemoryQuarantine()),
        ReplayCounts(),
        Progress(len(expected), io.StringIO()),
    )
    replay.clean_up()

    assert set(_delivered(publisher)) == expected
    assert len(_delivered(publisher)) == len(expected)
    assert store.list("") == []
