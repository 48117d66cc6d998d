"""The lag monitor, its table and its OpenTelemetry gauges (in-memory feeds and leases; an
OpenTelemetry SDK meter provider with an in-memory reader)."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from events.changefeed import InMemoryChangeFeed, InMemoryLeaseStore
from events.changefeed.feed import FeedRange
from events.changefeed.leases import Lease
from events.hosts.lag import (
    CHANGES_GAUGE,
    SECONDS_GAUGE,
    LagGauges,
    LagMonitor,
    MonitoredFeed,
    export_lag,
    format_duration,
    format_table,
    watch,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _monitor() -> LagMonitor:
    """Feed ``orders`` with 2 changes pending for 40 s and 30 s; ``streams`` caught up."""
    clock = [NOW - timedelta(seconds=40)]
    orders = InMemoryChangeFeed(ranges=2, clock=lambda: clock[0])
    streams = InMemoryChangeFeed(clock=lambda: clock[0])
    store = InMemoryLeaseStore()
    for feed, prefix in ((orders, "orders."), (streams, "streams.")):
        for feed_range in feed.feed_ranges():
            store.create(
                Lease(
                    id=f"{prefix}{feed_range.key}",
                    processor=prefix,
                    feed_range=feed_range,
                    start_from="beginning",
                    timestamp=NOW,
                    owner="host-1",
                )
            )
    orders.write({"id": "o-1"}, "a")
    clock[0] += timedelta(seconds=10)
    orders.write({"id": "o-2"}, "zz")
    return LagMonitor(
        [
            MonitoredFeed("relay_orders", "orders.", orders),
            MonitoredFeed("relay_streams", "streams.", streams),
        ],
        store,
        clock=lambda: NOW,
    )


def _gauge_points(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], float]:
    data = reader.get_metrics_data()
    points: dict[tuple[str, str, str], float] = {}
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = point.attributes or {}
                    key = (metric.name, str(attributes["feed"]), str(attributes["lease"]))
                    points[key] = float(point.value)  # type: ignore[union-attr]
    return points


def test_lag_monitor_rows_per_feed_and_lease_with_time_behind() -> None:
    rows = _monitor().measure()

    summary = {(r.feed, r.lease): (r.lag.pending, r.lag.seconds_behind) for r in rows if r.lag}
    pending_orders = [v for (feed, _), v in summary.items() if feed == "relay_orders"]
    assert sum(p for p, _ in pending_orders) == 2
    assert max(s for _, s in pending_orders) == 40.0  # o-1 waited 40 s, o-2 30 s
    assert summary[("relay_streams", "streams.00-FF")] == (0, 0.0)


def test_lag_gauges_report_the_last_measure_per_feed_and_lease() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauges = LagGauges(provider.get_meter("test"))
    rows = _monitor().measure()

    gauges.record(rows)
    points = _gauge_points(reader)

    for row in rows:
        assert row.lag is not None
        assert points[(CHANGES_GAUGE, row.feed, row.lease)] == row.lag.pending
        assert points[(SECONDS_GAUGE, row.feed, row.lease)] == row.lag.seconds_behind
    assert sum(v for (name, feed, _), v in points.items() if name == CHANGES_GAUGE) == 2
    assert max(v for (name, _, _), v in points.items() if name == SECONDS_GAUGE) == 40.0
    provider.shutdown()


def test_export_lag_records_a_measure_into_the_gauges_until_stopped() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauges = LagGauges(provider.get_meter("test"))
    stop = threading.Event()

    thread = export_lag(_monitor(), gauges, interval=0.05, stop=stop)
    pause = threading.Event()
    for _ in range(200):  # bounded: at most 10 s
        if _gauge_points(reader):
            break
        pause.wait(0.05)
    stop.set()
    thread.join(5)

    assert not thread.is_alive()
    assert sum(v for (name, _, _), v in _gauge_points(reader).items() if name == CHANGES_GAUGE) == 2
    provider.shutdown()


def test_lag_table_shows_each_lease_a_feed_without_leases_and_totals() -> None:
    rows = _monitor().measure()

    table = format_table(rows, ["relay_orders", "relay_streams", "relay_new"])

    lines = table.splitlines()
    assert lines[0].split() == ["FEED", "LEASE", "RANGE", "OWNER", "PENDING", "BEHIND"]
    assert any(line.startswith("relay_new") and "(no leases yet)" in line for line in lines)
    assert "relay_orders: pending=2 behind=40s" in lines
    assert "relay_streams: pending=0 behind=0s" in lines
    assert "relay_new: pending=0 behind=0s" in lines


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (90061, "1d01h")],
)
def test_format_duration_short_forms(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_watch_not_a_terminal_prints_count_blocks_with_a_time_stamp() -> None:
    out = io.StringIO()
    draws: list[int] = []
    sleeps: list[float] = []

    def draw() -> str:
        draws.append(1)
        return f"table {len(draws)}"

    watch(draw, interval=2.0, count=3, out=out, sleep=sleeps.append)

    text = out.getvalue()
    assert [line for line in text.splitlines() if line.startswith("table")] == [
        "table 1",
        "table 2",
        "table 3",
    ]
    assert sleeps == [2.0, 2.0]
    assert "\x1b[" not in text


def test_feed_range_rows_keep_the_lease_range() -> None:
    rows = _monitor().measure("relay_orders")

    assert {r.lag.feed_range for r in rows if r.lag} == set(
        InMemoryChangeFeed(ranges=2).feed_ranges()
    )
    assert all(isinstance(r.lag.feed_range, FeedRange) for r in rows if r.lag)


def test_lag_functions_host_lease_in_the_old_format_is_listed_not_estimated() -> None:
    from events.adapters.cosmos.changefeed import HostLease

    store = InMemoryLeaseStore()
    old = HostLease(
        id="orders.account_db_coll..0", owner="worker-7", feed_range=None, position=None
    )
    monitor = LagMonitor(
        [MonitoredFeed("relay_orders", "orders.", InMemoryChangeFeed(), lambda: [old])], store
    )

    rows = monitor.measure()
    table = format_table(rows, ["relay_orders"])

    assert [(r.lease, r.owner, r.lag) for r in rows] == [
        ("orders.account_db_coll..0", "worker-7", None)
    ]
    assert "worker-7" in table
    note = "Functions host lease (partition key range format): not estimated"
    assert f"orders.account_db_coll..0: {note}" in table
