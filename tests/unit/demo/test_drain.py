"""The drain rule: wait while events arrive, give up when idle or at the limit (fake clock)."""

from __future__ import annotations

import pytest

from devstack.demo.drain import DrainRule, DrainVerdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_drain_nothing_missing_done(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)

    assert rule.observe(arrived=10, missing=0) is DrainVerdict.DONE


def test_drain_missing_and_recent_progress_waits(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)
    rule.observe(arrived=10, missing=5)
    clock.now += 29

    assert rule.observe(arrived=10, missing=5) is DrainVerdict.WAIT


def test_drain_no_new_event_for_idle_seconds_stalled(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)
    rule.observe(arrived=10, missing=5)
    clock.now += 30

    assert rule.observe(arrived=10, missing=5) is DrainVerdict.STALLED


def test_drain_slow_steady_progress_keeps_waiting_past_idle_seconds(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)
    verdicts = []
    for arrived in range(11, 21):  # one event every 20 s: 200 s in all, never idle for 30
        clock.now += 20
        verdicts.append(rule.observe(arrived=arrived, missing=100 - arrived))

    assert verdicts == [DrainVerdict.WAIT] * 10
    assert rule.elapsed == 200


def test_drain_idle_measured_from_the_last_new_event(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)
    rule.observe(arrived=10, missing=5)
    clock.now += 25
    rule.observe(arrived=11, missing=4)
    clock.now += 25

    assert rule.observe(arrived=11, missing=4) is DrainVerdict.WAIT
    assert rule.idle == 25
    clock.now += 5
    assert rule.observe(arrived=11, missing=4) is DrainVerdict.STALLED


def test_drain_progress_until_the_limit_gives_up_at_the_limit(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=100, clock=clock)
    rule.observe(arrived=0, missing=50)
    arrived = 0
    verdict = DrainVerdict.WAIT
    while verdict is DrainVerdict.WAIT:
        clock.now += 10
        arrived += 1
        verdict = rule.observe(arrived=arrived, missing=50 - arrived)

    assert verdict is DrainVerdict.LIMIT
    assert rule.elapsed == 100


def test_drain_everything_arrived_at_the_limit_done(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=100, clock=clock)
    clock.now += 500

    assert rule.observe(arrived=3, missing=0) is DrainVerdict.DONE


def test_drain_nothing_ever_arrives_stalled_after_idle_seconds(clock: FakeClock) -> None:
    rule = DrainRule(idle_seconds=30, limit_seconds=600, clock=clock)
    clock.now += 29
    assert rule.observe(arrived=0, missing=5) is DrainVerdict.WAIT
    clock.now += 1

    assert rule.observe(arrived=0, missing=5) is DrainVerdict.STALLED


@pytest.mark.parametrize(("idle", "limit"), [(0, 10), (10, 0), (-1, 10)])
def test_drain_non_positive_seconds_refused(idle: float, limit: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        DrainRule(idle_seconds=idle, limit_seconds=limit)
