"""``python -m events replay``: relay a window of a container's changes again.

    python -m events replay --feed F --since TIME [--until TIME] [--dry-run] [--force]
    python -m events replay --feed F --resume PREFIX [--force]

The window is ``[since, until)`` by the change's ``_ts`` (one-second resolution), ``until``
defaulting to the moment the command starts (the live relay handles what comes later). Every
feed range of the feed's container is read from the change feed at ``since`` by a lease of a
NEW prefix, ``replay-<UTC stamp>.<feed prefix>``: it starts with no declared prefix and none
starts it, so neither the live processor nor the Functions trigger (which list their leases
by prefix) ever sees it, and the live leases are untouched. Each page's changes in the window
go through the same relay as the live feed (same sources, contracts, routes, quarantine), and
the replay lease is checkpointed after each page. A range is done at its first change at or
after ``until``, or at the current end of its feed.

What a replay re-sends (the change feed in latest-version mode returns the CURRENT version of
each document changed since ``since``, once):
- outbox: the event documents written in the window that still exist (they expire with the
  outbox TTL);
- CDC: the current version of each entity whose last change falls in the window: a document
  changed again after ``until`` is not re-sent (its last change is outside the window), and
  intermediate versions are not re-sent;
- event store: the stream events written in the window (they are insert-only).
Events carry the same ids as when they were first published (derived from the documents), so
Service Bus drops them as duplicates within its duplicate-detection window, and consumers'
inboxes drop them after it.

Refusals (without ``--force``; a dry run reports them and sends nothing anyway):
- the window starts longer ago than the outbox TTL (declaration ``outboxTtlSeconds``) on a
  feed with an outbox: outbox documents from then are gone, the window is incomplete;
- the window starts longer ago than the shortest duplicate-detection window of the
  destinations: Service Bus will not drop the events consumers already received; they rely on
  their inbox (``events.IdempotentConsumer``).

``--dry-run`` reads the window, maps it through the relay with an in-memory publisher and
quarantine, and prints how many documents and events (per destination) would be sent; it
creates no lease and sends nothing. A real run first counts the same way (the progress
bar's total), then sends. The replay's leases are deleted when it completes; when it is
interrupted (Ctrl-C, Service Bus or Cosmos DB unavailable beyond the retries), they are kept
and the command prints ``--resume PREFIX``, which continues from their checkpoints.

Progress goes to stderr: a bar redrawn in place on a terminal, otherwise a line at each tenth.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from events.changefeed.feed import ChangeFeed, FeedRange, Position
from events.changefeed.leases import Lease, LeaseManager, LeaseStore
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.core.relay import BatchOutcome, Relay
from events.deployment.catalog import Deployment, FeedDefinition, load_deployment
from events.deployment.settings import Settings, load_settings
from events.deployment.topology import Topology, iso_duration_seconds
from events.errors import RelayError, SettingsError, TransientError
from events.hosts.lag import OneLineParser, check_cosmos, format_duration

__all__ = [
    "Progress",
    "ReplayCounts",
    "Window",
    "WindowReplay",
    "main",
    "parse_time",
    "replay_prefix",
    "window_warnings",
]


_PROG = "python -m events replay"
_MAX_ITEMS: Final = 100
#: A replay lease outlives a slow page by far; it is renewed by every checkpoint.
_LEASE_DURATION: Final = timedelta(minutes=10)
#: Attempts at one page when the relay raises TransientError, and the first delay (doubled).
_ATTEMPTS: Final = 6
_FIRST_DELAY: Final = 1.0
_EXIT_REFUSED = 1
_EXIT_INTERRUPTED = 1


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (UTC when it has no offset)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z): {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    """``[since, until)`` by ``_ts``; ``since`` counts in whole seconds, as ``_ts`` does."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError("until must be later than since")

    def before_end(self, document: Mapping[str, Any]) -> bool:
        ts = document.get("_ts")
        return not isinstance(ts, int | float) or ts < self.until.timestamp()

    def contains(self, document: Mapping[str, Any]) -> bool:
        ts = document.get("_ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            return False
        return int(self.since.timestamp()) <= ts < self.until.timestamp()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def replay_prefix(feed_prefix: str, started: datetime) -> str:
    return f"replay-{started.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.{feed_prefix}"


def window_warnings(
    topology: Topology, definition_sources: Sequence[str], since: datetime, now: datetime
) -> list[str]:
    """Why a replay from ``since`` needs ``--force`` (empty: it does not)."""
    age = (now - since).total_seconds()
    problems = []
    ttl = topology.cosmos.outbox_ttl_seconds
    if "outbox" in definition_sources and age > ttl:
        problems.append(
            f"the window starts {format_duration(age)} ago, longer ago than the outbox TTL "
            f"({ttl} s, outboxTtlSeconds): outbox documents from then have expired, so the "
            "window is incomplete"
        )
    windows = {
        entity.name: iso_duration_seconds(entity.duplicate_detection_history_time_window)
        for entity in (*topology.service_bus.topics, *topology.service_bus.queues)
    }
    if windows:
        name, shortest = min(windows.items(), key=lambda item: item[1])
        if age > shortest:
            problems.append(
                f"the window starts {format_duration(age)} ago, longer ago than the "
                f"duplicate-detection window of {name} ({shortest} s): Service Bus will not "
                "drop the events consumers already received; they rely on their inbox "
                "(IdempotentConsumer)"
            )
    return problems


@dataclass
class ReplayCounts:
    documents: int = 0
    events: int = 0
    quarantined: int = 0
    skipped: int = 0
    per_destination: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: BatchOutcome) -> None:
        self.documents += outcome.documents
        self.events += outcome.events
        self.quarantined += outcome.quarantined
        self.skipped += outcome.skipped

    def line(self) -> str:
        destinations = ", ".join(f"{d}={n}" for d, n in sorted(self.per_destination.items()))
        return (
            f"documents={self.documents} events={self.events}"
            f"{f' ({destinations})' if destinations else ''} quarantined={self.quarantined} "
            f"skipped={self.skipped}"
        )


class Progress:
    """Documents done out of a total, on ``out``: a bar redrawn in place on a terminal,
    otherwise one line each time another tenth is done (and at the end)."""

    def __init__(self, total: int, out: TextIO, *, tty: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self._out = out
        self._tty = out.isatty() if tty is None else tty
        self._tenths = 0

    def advance(self, documents: int) -> None:
        self.done += documents
        share = self.done / self.total if self.total else 1.0
        if self._tty:
            width = 30
            filled = min(width, int(share * width))
            self._out.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} documents "
                f"{share:.0%}"
            )
            self._out.flush()
            return
        tenths = min(10, int(share * 10))
        if tenths > self._tenths:
            self._tenths = tenths
            self._out.write(f"replay progress {self.done}/{self.total} documents {share:.0%}\n")
            self._out.flush()

    def finish(self) -> None:
        if self._tty:
            self._out.write("\n")
            self._out.flush()


class WindowReplay:
    """Reads a window of one feed, range by range, and hands its changes to a relay.

    ``count`` reads without leases (from ``since``, or from the checkpoints of the leases of
    ``prefix`` when they exist: a resumed replay); ``run`` reads through the leases of
    ``prefix`` (created at ``since`` where missing), checkpointing after every page.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        leases: LeaseStore,
        *,
        prefix: str,
        window: Window,
        instance_id: str,
        max_items: int = _MAX_ITEMS,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._feed = feed
        self._store = leases
        self._window = window
        self._max_items = max_items
        self._sleep = sleep
        self.prefix = prefix
        self._manager = LeaseManager(
            leases, prefix=prefix, instance_id=instance_id, lease_duration=_LEASE_DURATION
        )

    def _starts(self) -> list[tuple[FeedRange, Position]]:
        existing = self._store.list(self.prefix)
        if existing:
            return [(lease.feed_range, lease.position) for lease in existing]
        return [(feed_range, self._window.since) for feed_range in self._feed.feed_ranges()]

    def _pages(
        self, feed_range: FeedRange, position: Position
    ) -> Iterator[tuple[list[dict[str, Any]], str, bool]]:
        """(changes in the window, continuation, done) per page, until the range is done."""
        while True:
            page = self._feed.read_page(feed_range, position, self._max_items)
            if not page.items:
                return
            before = [d for d in page.items if self._window.before_end(d)]
            done = len(before) < len(page.items)
            yield [d for d in before if self._window.contains(d)], page.continuation, done
            if done:
                return
            position = page.continuation

    def count(self, relay: Relay, counts: ReplayCounts) -> None:
        """Map the window through ``relay`` (an in-memory one: nothing leaves)."""
        for feed_range, position in self._starts():
            for changes, _, _ in self._pages(feed_range, position):
                if changes:
                    counts.add(relay.process(changes))

    def run(self, relay: Relay, counts: ReplayCounts, progress: Progress) -> None:
        """Relay the window; raises TransientError when a page keeps failing (the leases keep
        their checkpoints: run again with the same prefix to resume)."""
        leases = self._manager.ensure(self._feed.feed_ranges(), self._window.since)
        for lease in leases:
            owned = self._manager.acquire(lease)
            for changes, continuation, _ in self._pages(owned.feed_range, owned.position):
                if changes:
                    counts.add(self._send(relay, changes))
                    progress.advance(len(changes))
                owned = self._manager.checkpoint(owned, continuation)
        progress.finish()

    def _send(self, relay: Relay, changes: list[dict[str, Any]]) -> BatchOutcome:
        delay = _FIRST_DELAY
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return relay.process(changes)
            except TransientError:
                if attempt == _ATTEMPTS:
                    raise
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def clean_up(self) -> int:
        """Delete the replay's leases; returns how many."""
        leases: list[Lease] = self._store.list(self.prefix)
        for lease in leases:
            self._store.delete(lease)
        return len(leases)


def _parser(feeds: Sequence[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=_PROG,
        description="Relay a window of a container's changes again, under new leases.",
    )
    parser.add_argument("--feed", required=True, choices=list(feeds), help="the feed to replay")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--since", type=parse_time, help="ISO 8601 start of the window (UTC without offset)"
    )
    start.add_argument(
        "--resume", metavar="PREFIX", help="continue an interrupted replay from its leases"
    )
    parser.add_argument(
        "--until", type=parse_time, default=None, help="ISO 8601 end (default: now), excluded"
    )
    parser.add_argument("--dry-run", action="store_true", help="count, send nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replay a window older than the outbox TTL or the duplicate-detection window",
    )
    parser.add_argument(
        "--insecure-local", action="store_true", help="do not verify TLS (loopback dev server)"
    )
    return parser


def _resume_window(prefix: str, definition: FeedDefinition, leases: LeaseStore) -> datetime:
    if not prefix.startswith("replay-") or not prefix.endswith(definition.lease_prefix):
        raise SettingsError(
            f"--resume {prefix!r} is not a replay prefix of feed {definition.function_name} "
            f"(replay-<stamp>.{definition.lease_prefix})"
        )
    found = leases.list(prefix)
    if not found:
        raise SettingsError(f"--resume {prefix!r}: no replay leases with that prefix")
    start = found[0].start_from
    if not isinstance(start, datetime):
        raise SettingsError(f"--resume {prefix!r}: the leases record no start time")
    return start


def _check_prefix(prefix: str, topology: Topology) -> None:
    for _, spec in topology.monitored():
        declared = spec.lease_prefix
        if prefix.startswith(declared) or declared.startswith(prefix):
            raise SettingsError(
                f"replay prefix {prefix!r} and the declared lease prefix {declared!r} of "
                f"{spec.function}: one starts the other; declare prefixes that do not start "
                "with 'replay-'"
            )


def _dry_relay(
    settings: Settings, deployment: Deployment, feed: str
) -> tuple[Relay, InMemoryPublisher]:
    # Imported here: the runtime module is the composition root (it imports no SDK itself).
    from events.hosts.runtime import Runtime  # noqa: PLC0415

    publisher = InMemoryPublisher(
        settings.destinations,
        max_message_size=deployment.topology.service_bus.max_message_size_kb * 1024,
    )
    runtime = Runtime.assemble(settings, deployment, publisher, InMemoryQuarantine())
    return runtime.relay(feed), publisher


def main(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    try:
        deployment = load_deployment()
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    parser = _parser([d.function_name for d in deployment.feeds])
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    if args.since is not None and args.since >= (args.until or started):
        parser.error("--since must be earlier than --until (default: now)")
    if args.resume is not None and args.dry_run:
        parser.error("--dry-run counts a new window: give --since, not --resume")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    logging.getLogger("events.core.relay").setLevel(logging.WARNING)
    verify_tls = not args.insecure_local
    from events.adapters.cosmos.changefeed import (  # noqa: PLC0415
        CosmosChangeFeed,
        CosmosLeaseStore,
    )
    from events.adapters.cosmos.client import (  # noqa: PLC0415
        cosmos_client,
        quiet_loopback_tls_warnings,
    )

    if not verify_tls:
        quiet_loopback_tls_warnings()
    definition = deployment.feed(args.feed)
    spec = next(f for _, f in deployment.topology.monitored() if f.function == args.feed)
    try:
        settings = load_settings(
            environ if environ is not None else os.environ, deployment.topology
        )
        check_cosmos(settings, deployment, [args.feed], verify_tls=verify_tls)
        client = cosmos_client(
            settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout
        )
        database = client.get_database_client(settings.database)
        lease_store = CosmosLeaseStore(database.get_container_client(settings.role("leases")))
        container = settings.container(definition.container)
        feed = CosmosChangeFeed(database.get_container_client(container))
        if args.resume is not None:
            prefix = args.resume
            since = _resume_window(prefix, definition, lease_store)
            until = args.until or started
        else:
            prefix = replay_prefix(definition.lease_prefix, started)
            since, until = args.since, args.until or started
        _check_prefix(prefix, deployment.topology)
        window = Window(since, until)
        replay = WindowReplay(
            feed,
            lease_store,
            prefix=prefix,
            window=window,
            instance_id=f"replay-{socket.gethostname()}-{os.getpid()}",
        )
        print(
            f"replay feed={args.feed} container={container} "
            f"window=[{_stamp(since)}, {_stamp(until)}) prefix={prefix}"
        )
        problems = window_warnings(deployment.topology, spec.sources, since, started)
        for problem in problems:
            print(f"WARNING: {problem}", file=sys.stderr)
        if problems and not args.force and not args.dry_run:
            print(
                f"{_PROG}: refused (see the warnings above); --force to replay anyway",
                file=sys.stderr,
            )
            return _EXIT_REFUSED
        dry_relay, dry_publisher = _dry_relay(settings, deployment, args.feed)
        counted = ReplayCounts()
        replay.count(dry_relay, counted)
        counted.per_destination = {
            d: len(messages) for d, messages in dry_publisher.delivered.items() if messages
        }
        if args.dry_run:
            print(f"dry run, nothing sent; would send: {counted.line()}")
            if problems:
                print("a real run would be refused without --force", file=sys.stderr)
            return 0
        print(f"to send: {counted.line()}")
        print("events keep the ids they were first published with (derived from the documents)")
        from events.hosts.runtime import Runtime, check_resources  # noqa: PLC0415

        runtime = Runtime.from_environment(
            environ if environ is not None else os.environ,
            verify_tls=verify_tls,
            deployment=deployment,
        )
        problems_now = check_resources(runtime, verify_tls=verify_tls)
        if problems_now:
            print(f"{_PROG}: {problems_now[0]}", file=sys.stderr)
            return 1
        sent = ReplayCounts()
        progress = Progress(counted.documents, sys.stderr)
        try:
            replay.run(runtime.relay(args.feed), sent, progress)
        except (TransientError, KeyboardInterrupt) as exc:
            progress.finish()
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            print(
                f"{_PROG}: stopped ({reason}); {sent.documents} documents sent. Resume with: "
                f"{_PROG} --feed {args.feed} --resume {prefix}",
                file=sys.stderr,
            )
            return _EXIT_INTERRUPTED
        removed = replay.clean_up()
        print(f"sent: {sent.line()}; replay leases removed={removed}")
        return 0
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"{_PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
