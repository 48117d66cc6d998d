"""How far behind the relay is, per feed and lease: ``python -m events lag`` and the gauges.

``python -m events lag [--feed F] [--watch SECONDS [--count N]] [--limit N]`` prints one row
per lease of every feed of the declaration: the feed, the lease (its feed range), its owner,
the changes pending after its checkpoint and how long the oldest of them has waited
(``events.changefeed.lag``: a change's ``_ts`` against now). ``--watch`` redraws the table
every SECONDS until Ctrl-C (or ``--count`` refreshes).

The same figure is exported as two OpenTelemetry observable gauges, created through the
OpenTelemetry API only (they are exported once the process configures a meter provider):

    events.feed.lag.changes   {change}  attributes feed, lease
    events.feed.lag.seconds   s         attributes feed, lease

Measuring reads the change feed, so the gauges report the LAST measure (``LagGauges.record``)
instead of reading at every collection: the long-running processor measures every
``--lag-interval`` seconds, the Functions app's timer function every minute.

Leases written by the Functions host (the Cosmos DB trigger keeps its own lease documents in
the same container and under the same prefix) are read too, through
``events.adapters.cosmos.changefeed.host_leases``: an EPK-based lease (the extension's format
for a new lease container) is measured from its continuation like this package's own; an
older partition-key-range lease is listed with its owner and ``not estimated``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

from opentelemetry import metrics

from events.availability import AvailabilityLog
from events.changefeed.feed import ChangeFeed, FeedRange
from events.changefeed.lag import LeaseLag, lease_lag, range_lag
from events.changefeed.leases import LeaseStore
from events.deployment.catalog import Deployment, load_deployment
from events.deployment.settings import COSMOS_CONNECTION, DATABASE, Settings, load_settings
from events.errors import RelayError, SettingsError

if TYPE_CHECKING:
    from events.adapters.cosmos.changefeed import HostLease

__all__ = [
    "CHANGES_GAUGE",
    "SECONDS_GAUGE",
    "FeedLag",
    "LagGauges",
    "LagMonitor",
    "MonitoredFeed",
    "OneLineParser",
    "check_cosmos",
    "export_lag",
    "format_duration",
    "format_table",
    "main",
    "process_gauges",
    "totals",
]

logger = logging.getLogger(__name__)

CHANGES_GAUGE: Final = "events.feed.lag.changes"
SECONDS_GAUGE: Final = "events.feed.lag.seconds"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr naming the problem, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


_PROG = "python -m events lag"
#: Changes counted per lease at most (each costs a read of ``_PAGE`` changes per page).
DEFAULT_LIMIT: Final = 100_000
_PAGE = 1000


@dataclass(frozen=True)
class FeedLag:
    """One lease of one feed, measured. ``lag`` is None for a lease that cannot be read
    (a Functions-host lease in the old partition-key-range format)."""

    feed: str
    lease: str
    owner: str | None
    lag: LeaseLag | None
    note: str = ""


@dataclass(frozen=True)
class MonitoredFeed:
    """A feed of the declaration as the monitor reads it."""

    name: str
    prefix: str
    feed: ChangeFeed
    #: Leases the Functions host wrote under the prefix (none outside Azure's Functions).
    host_leases: Callable[[], Sequence[HostLease]] = lambda: ()


class LagMonitor:
    """Measures every feed's leases; keeps the last measure for the gauges."""

    def __init__(
        self,
        feeds: Sequence[MonitoredFeed],
        leases: LeaseStore,
        *,
        limit: int = DEFAULT_LIMIT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.feeds = list(feeds)
        self._leases = leases
        self._limit = limit
        self._clock = clock

    def measure(self, feed: str | None = None) -> list[FeedLag]:
        """Rows for every lease of every feed (or of ``feed``), feed by feed, lease id order."""
        rows: list[FeedLag] = []
        for monitored in self.feeds:
            if feed is not None and monitored.name != feed:
                continue
            rows += self._measure_feed(monitored)
        return rows

    def _measure_feed(self, monitored: MonitoredFeed) -> list[FeedLag]:
        now = self._clock()
        rows = [
            FeedLag(
                feed=monitored.name,
                lease=lease.id,
                owner=lease.owner,
                lag=lease_lag(monitored.feed, lease, now=now, page_size=_PAGE, limit=self._limit),
            )
            for lease in self._leases.list(monitored.prefix)
        ]
        for host in monitored.host_leases():
            if host.feed_range is None or host.position is None:
                rows.append(
                    FeedLag(
                        monitored.name,
                        host.id,
                        host.owner,
                        None,
                        "Functions host lease (partition key range format): not estimated",
                    )
                )
                continue
            lag = range_lag(
                monitored.feed,
                processor=monitored.prefix,
                lease_id=host.id,
                feed_range=host.feed_range,
                owner=host.owner,
                position=host.position,
                now=now,
                page_size=_PAGE,
                limit=self._limit,
            )
            rows.append(FeedLag(monitored.name, host.id, host.owner, lag, "Functions host lease"))
        return sorted(rows, key=lambda row: row.lease)


def totals(rows: Iterable[FeedLag]) -> dict[str, tuple[int, float]]:
    """Per feed: changes pending in all its leases, and the longest time behind."""
    result: dict[str, tuple[int, float]] = {}
    for row in rows:
        pending, behind = result.get(row.feed, (0, 0.0))
        if row.lag is not None:
            pending += row.lag.pending
            behind = max(behind, row.lag.seconds_behind)
        result[row.feed] = (pending, behind)
    return result


class LagGauges:
    """``events.feed.lag.changes`` and ``events.feed.lag.seconds``: the last recorded measure,
    one observation per lease (attributes ``feed`` and ``lease``)."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter if meter is not None else metrics.get_meter("events.lag")
        self._rows: list[FeedLag] = []
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            CHANGES_GAUGE,
            callbacks=[self._changes],
            unit="{change}",
            description="Changes written after the lease's checkpoint and not yet relayed",
        )
        meter.create_observable_gauge(
            SECONDS_GAUGE,
            callbacks=[self._seconds],
            unit="s",
            description="How long the oldest change not yet relayed has waited (0: caught up)",
        )

    def record(self, rows: Sequence[FeedLag]) -> None:
        with self._lock:
            self._rows = [row for row in rows if row.lag is not None]

    def _observe(self, value: Callable[[LeaseLag], float]) -> list[metrics.Observation]:
        with self._lock:
            rows = list(self._rows)
        return [
            metrics.Observation(value(row.lag), {"feed": row.feed, "lease": row.lease})
            for row in rows
            if row.lag is not None
        ]

    def _changes(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        return self._observe(lambda lag: lag.pending)

    def _seconds(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        return self._observe(lambda lag: lag.seconds_behind)


def export_lag(
    monitor: LagMonitor,
    gauges: LagGauges,
    *,
    interval: float,
    stop: threading.Event,
) -> threading.Thread:
    """Measure every ``interval`` seconds until ``stop`` and record each measure in
    ``gauges``; a failed measure logs one WARNING per outage and keeps the last figures."""
    availability = AvailabilityLog(logger)

    def loop() -> None:
        while not stop.is_set():
            try:
                rows = monitor.measure()
            except Exception as exc:  # noqa: BLE001 - a monitor must outlive an outage
                availability.down("lag measure", f"{type(exc).__name__}: {exc}")
            else:
                availability.up("lag measure")
                gauges.record(rows)
                for feed, (pending, behind) in totals(rows).items():
                    logger.debug("feed lag feed=%s pending=%d behind_s=%.0f", feed, pending, behind)
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="lag-export", daemon=True)
    thread.start()
    return thread


_gauges_lock = threading.Lock()
_gauges: LagGauges | None = None


def process_gauges() -> LagGauges:
    """The process-wide gauges (an instrument is created once per process)."""
    global _gauges  # noqa: PLW0603 - one set of instruments per process, by design
    with _gauges_lock:
        if _gauges is None:
            _gauges = LagGauges()
        return _gauges


def check_cosmos(
    settings: Settings, deployment: Deployment, feeds: Sequence[str], *, verify_tls: bool
) -> None:
    """The database, the leases container and the containers of ``feeds`` exist (else one
    SettingsError naming the setting), before a command reads them."""
    from events.adapters.cosmos.client import check_containers, cosmos_client  # noqa: PLC0415

    client = cosmos_client(settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout)
    needed = [d.container for d in deployment.feeds if d.function_name in feeds]
    needed.append(settings.roles["leases"])
    check_containers(
        client.get_database_client(settings.database),
        {settings.container_settings[c]: settings.container(c) for c in needed},
        database_setting=DATABASE,
        connection_setting=COSMOS_CONNECTION,
    )


def monitor_for(
    settings: Settings,
    deployment: Deployment,
    *,
    verify_tls: bool = True,
    limit: int = DEFAULT_LIMIT,
) -> LagMonitor:
    """A monitor over every feed of the deployment, with its own change-feed readers (a
    processor's reader keeps page iterators that a second reader must not share)."""
    # Adapters are imported here so that importing this module loads no SDK.
    from events.adapters.cosmos.changefeed import (  # noqa: PLC0415
        CosmosChangeFeed,
        CosmosLeaseStore,
        host_leases,
    )
    from events.adapters.cosmos.client import cosmos_client  # noqa: PLC0415

    client = cosmos_client(settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout)
    database = client.get_database_client(settings.database)
    lease_container = database.get_container_client(settings.role("leases"))
    feeds = []
    for definition in deployment.feeds:
        feed = CosmosChangeFeed(
            database.get_container_client(settings.container(definition.container))
        )
        feeds.append(
            MonitoredFeed(
                name=definition.function_name,
                prefix=definition.lease_prefix,
                feed=feed,
                host_leases=functools.partial(
                    host_leases, lease_container, definition.lease_prefix, feed
                ),
            )
        )
    return LagMonitor(feeds, CosmosLeaseStore(lease_container), limit=limit)


def format_duration(seconds: float) -> str:
    """``0s``, ``45s``, ``12m05s``, ``3h04m``, ``2d03h``: short and sortable by eye."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _range(feed_range: FeedRange) -> str:
    return f"[{feed_range.min or '00'},{feed_range.max})"


def format_table(rows: Sequence[FeedLag], feeds: Sequence[str]) -> str:
    """The table the command prints: one row per lease, a row for a feed without leases, and
    one summary line per feed."""
    header = ("FEED", "LEASE", "RANGE", "OWNER", "PENDING", "BEHIND")
    lines: list[tuple[str, ...]] = [header]
    notes: list[str] = []
    for feed in feeds:
        mine = [row for row in rows if row.feed == feed]
        if not mine:
            lines.append((feed, "(no leases yet)", "-", "-", "-", "-"))
        for row in mine:
            lag = row.lag
            if lag is None:
                lines.append((feed, row.lease, "-", row.owner or "(free)", "?", "?"))
            else:
                pending = f"{lag.pending}+" if lag.capped else str(lag.pending)
                lines.append(
                    (
                        feed,
                        row.lease,
                        _range(lag.feed_range),
                        row.owner or "(free)",
                        pending,
                        format_duration(lag.seconds_behind),
                    )
                )
            if row.note:
                notes.append(f"{row.lease}: {row.note}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.rjust(widths[i]) if i >= 4 else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in lines
    ]
    summed = totals(rows)
    for feed in feeds:
        total, behind = summed.get(feed, (0, 0.0))
        text.append(f"{feed}: pending={total} behind={format_duration(behind)}")
    text += notes
    return "\n".join(text)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not 0 < number <= 1_000_000:
            raise argparse.ArgumentTypeError(
                f"must be greater than 0 and at most 1000000, not {value}"
            )
        return number

    return parse


def _parser(feeds: Sequence[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=_PROG,
        description="Per feed and lease: changes pending after the checkpoint and how long the "
        "oldest has waited.",
    )
    parser.add_argument("--feed", choices=list(feeds), default=None, help="only this feed")
    parser.add_argument(
        "--watch",
        type=_positive(float),
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C",
    )
    parser.add_argument(
        "--count", type=_positive(int), default=None, help="with --watch: stop after N refreshes"
    )
    parser.add_argument(
        "--limit",
        type=_positive(int),
        default=DEFAULT_LIMIT,
        help=f"count at most N changes per lease (default {DEFAULT_LIMIT}; more shows N+)",
    )
    parser.add_argument(
        "--insecure-local", action="store_true", help="do not verify TLS (loopback dev server)"
    )
    return parser


def watch(
    draw: Callable[[], str],
    *,
    interval: float,
    count: int | None,
    out: TextIO,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Redraw ``draw()`` every ``interval`` seconds; on a terminal in place, else one block
    per refresh after a time stamp line."""
    shown = 0
    while count is None or shown < int(count):
        text = draw()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if out.isatty():
            out.write("\x1b[H\x1b[2J")
        out.write(f"{stamp}\n{text}\n")
        out.flush()
        shown += 1
        if count is None or shown < int(count):
            sleep(interval)


def main(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    try:
        deployment = load_deployment()
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    names = [d.function_name for d in deployment.feeds]
    args = _parser(names).parse_args(argv)
    if args.count is not None and args.watch is None:
        print(f"{_PROG}: --count needs --watch", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    verify_tls = not args.insecure_local
    if not verify_tls:
        from events.adapters.cosmos.client import quiet_loopback_tls_warnings  # noqa: PLC0415

        quiet_loopback_tls_warnings()
    shown = [args.feed] if args.feed else names
    try:
        settings = load_settings(
            environ if environ is not None else os.environ, deployment.topology
        )
        check_cosmos(settings, deployment, shown, verify_tls=verify_tls)
        monitor = monitor_for(settings, deployment, verify_tls=verify_tls, limit=int(args.limit))

        def draw() -> str:
            return format_table(monitor.measure(args.feed), shown)

        if args.watch is None:
            print(draw())
            return 0
        try:
            watch(draw, interval=args.watch, count=args.count, out=sys.stdout)
        except KeyboardInterrupt:
            return 0
        return 0
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"{_PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
