"""Operating the quarantine: list what is parked, re-drive it once the cause is fixed.

``python -m events quarantine list [--feed F] [--limit N]``  (each record with its expiry, then
the parked aggregates)
``python -m events quarantine redrive [--feed F] [--limit N] [ID ...]``
``python -m events quarantine redrive --aggregate KEY [--feed F]``

Every re-drive goes by aggregate (feed + partition key value): its records are re-driven in
change order (``_lsn`` ascending, then the time they were quarantined) and the re-drive stops
at the first record that stays quarantined, so the later ones stay parked behind it, as the
relay parked them. When none is left, the aggregate is released: the relay publishes its next
changes again (until then it parks them, batch after batch). ``--aggregate KEY`` re-drives one
aggregate (in every feed, or ``--feed``); record ids re-drive their aggregates; with neither,
the aggregates of the ``--limit`` oldest records and parked aggregates. A record without a
partition key parks nothing and is re-driven alone. ``list --aggregate KEY`` shows the records
in change order. The exit status is 0 only when every aggregate was released.

Re-driving runs the stored document through the same relay as the feed it came from, past the
parking (``parked_check=False``). When it now maps and publishes, the record is deleted; when
it fails again, the relay quarantines it again under the same id with the new error, and it
stays. Event ids are deterministic, so a re-drive of something already published is dropped by
duplicate detection. Later changes of the aggregate were parked, not published, so the
re-driven events arrive in change order. Output names ids and reasons, never document bodies.

Records expire with the quarantine container's TTL (the declaration's ``defaultTtl``).
``warn_expiring`` logs one WARNING per record within ``EXPIRY_NOTICE`` of its expiry (the
Functions app runs it daily; an alert fires on that line), so nothing is deleted unseen.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from events.core.quarantine import (
    ExpiryNotice,
    ParkedAggregate,
    QuarantineAdmin,
    QuarantineRecord,
)
from events.deployment.topology import Topology
from events.errors import RelayError, SettingsError
from events.hosts.runtime import Runtime, check_resources

__all__ = [
    "EXPIRY_NOTICE",
    "REDRIVE_ROUNDS",
    "AggregateRedrive",
    "RedriveResult",
    "change_order",
    "expiry_notice",
    "main",
    "redrive",
    "redrive_aggregate",
    "run_list",
    "run_redrive",
    "warn_expiring",
]

logger = logging.getLogger(__name__)

#: How long before a record's expiry it is announced (docs/security.md).
EXPIRY_NOTICE: Final = timedelta(days=7)
#: Records read per expiry check, oldest first (the oldest expire first).
_EXPIRY_SCAN = 1000
#: Times a re-drive looks at an aggregate again when the relay parked it again meanwhile.
REDRIVE_ROUNDS: Final = 5
#: The partition key of a record whose document had none: it parks no aggregate.
_UNKNOWN = "<unknown>"


def expiry_notice(topology: Topology) -> ExpiryNotice | None:
    """The quarantine container's TTL as a notice rule; None when records never expire."""
    ttl = topology.cosmos.one("quarantine").default_ttl
    return ExpiryNotice(timedelta(seconds=ttl), EXPIRY_NOTICE) if ttl > 0 else None


def warn_expiring(admin: QuarantineAdmin, notice: ExpiryNotice, now: datetime) -> int:
    """One WARNING per record that expires within the notice; returns how many."""
    due = notice.due(admin.list(limit=_EXPIRY_SCAN), now)
    for record in due:
        logger.warning(
            "quarantine record expires soon quarantine_id=%s feed=%s document_id=%s reason=%s "
            "expires_at=%s: re-drive it, or export it before then",
            record.id,
            record.feed,
            record.document_id,
            record.reason.value,
            notice.expires_at(record).isoformat(),
        )
    return len(due)


@dataclass(frozen=True)
class RedriveResult:
    record_id: str
    published: int
    resolved: bool


def redrive(record: QuarantineRecord, runtime: Runtime, admin: QuarantineAdmin) -> RedriveResult:
    """Relay one quarantined document again, past its aggregate's parking (callers go in change
    order: ``redrive_aggregate``); delete its record when it no longer stays quarantined."""
    if record.document is None:
        return RedriveResult(record.id, 0, resolved=False)  # too large to keep: see its record
    outcome = runtime.relay(record.feed).process([record.document], parked_check=False)
    if outcome.quarantined:
        return RedriveResult(record.id, 0, resolved=False)
    admin.delete(record)
    return RedriveResult(record.id, outcome.published, resolved=True)


def change_order(records: Sequence[QuarantineRecord]) -> list[QuarantineRecord]:
    """Records by feed, then in change order: ``_lsn`` ascending (records without one last),
    then the time they were quarantined."""
    return sorted(
        records,
        key=lambda r: (r.feed, r.lsn is None, r.lsn or 0, r.quarantined_at),
    )


@dataclass(frozen=True)
class AggregateRedrive:
    """What a re-drive did to one aggregate of one feed: each record it saw with its result
    (None: not tried, parked behind one that stayed), and whether the aggregate is released."""

    feed: str
    partition_key: str
    outcomes: list[tuple[QuarantineRecord, RedriveResult | None]]
    released: bool
    #: Whether the aggregate had a record or a marker at all.
    found: bool = True


def redrive_aggregate(
    feed: str,
    partition_key: str,
    runtime: Runtime,
    admin: QuarantineAdmin,
    *,
    rounds: int = REDRIVE_ROUNDS,
) -> AggregateRedrive:
    """Re-drive one aggregate's records in change order, stop at the first one that stays
    quarantined, and release the aggregate when none is left.

    Under a running relay: the marker is read BEFORE the records are listed, and released only
    if it was not parked again since (``QuarantineAdmin.release``). A change the relay parks
    meanwhile is either among the records listed (then re-driven in its order), or its park
    comes after the read and the release fails: the re-drive looks again (at most ``rounds``
    times). If the relay parks it after the release, the aggregate is parked again with it.
    Nothing parked is ever left behind a released aggregate."""
    outcomes: list[tuple[QuarantineRecord, RedriveResult | None]] = []
    for _round in range(rounds):
        marker = admin.parked_aggregate(feed, partition_key)
        records = change_order(admin.records_of(feed, partition_key))
        blocker: QuarantineRecord | None = None
        for record in records:
            if blocker is not None:
                outcomes.append((record, None))
                continue
            result = redrive(record, runtime, admin)
            outcomes.append((record, result))
            if not result.resolved:
                blocker = record
        if blocker is not None:
            return AggregateRedrive(feed, partition_key, outcomes, released=False)
        if marker is None:
            if not records:
                found = bool(outcomes) or _round > 0
                return AggregateRedrive(feed, partition_key, outcomes, released=True, found=found)
            continue  # records whose park is still to come: look again
        if admin.release(marker):
            return AggregateRedrive(feed, partition_key, outcomes, released=True)
        logger.info(
            "aggregate parked again during its re-drive feed=%s partition_key=%s: looking again",
            feed,
            partition_key,
        )
    return AggregateRedrive(feed, partition_key, outcomes, released=False)


def _aggregates_of(
    records: Sequence[QuarantineRecord], parked: Sequence[ParkedAggregate]
) -> list[tuple[str, str]]:
    """(feed, partition key) of the records and markers, each once, in the order met."""
    found = [(r.feed, r.partition_key) for r in records if r.partition_key != _UNKNOWN]
    found += [(p.feed, p.partition_key) for p in parked]
    return list(dict.fromkeys(found))


def _run_redrive(
    aggregates: Sequence[tuple[str, str]],
    loose: Sequence[QuarantineRecord],
    runtime: Runtime,
    admin: QuarantineAdmin,
) -> int:
    """Re-drive each aggregate (and each record without a partition key, alone); one line per
    record and per aggregate, then totals. Status 0 only when everything was released."""
    resolved = stayed = released = parked = 0
    for feed, partition_key in aggregates:
        done = redrive_aggregate(feed, partition_key, runtime, admin)
        if not done.found:
            continue
        blocker = ""
        for number, (record, result) in enumerate(done.outcomes, start=1):
            if result is None:
                state = f"not tried: parked behind {blocker}"
            elif result.resolved:
                state = f"published={result.published}"
            else:
                blocker = record.id
                state = "still quarantined: later records of the aggregate stay parked behind it"
            print(f"[{number}/{len(done.outcomes)}] {record.id} lsn={record.lsn} {state}")
        resolved += sum(1 for _, r in done.outcomes if r is not None and r.resolved)
        stayed += sum(1 for _, r in done.outcomes if r is None or not r.resolved)
        released += done.released
        parked += not done.released
        state = "released" if done.released else "still parked"
        print(f"aggregate={partition_key} feed={feed} {state}", flush=True)
    for record in loose:
        result = redrive(record, runtime, admin)
        resolved += result.resolved
        stayed += not result.resolved
        state = f"published={result.published}" if result.resolved else "still quarantined"
        print(f"{record.id} (no partition key) {state}", flush=True)
    if not (released or parked or loose):
        print("nothing quarantined or parked there")
    print(
        f"re-driven={resolved} still-quarantined={stayed} "
        f"aggregates-released={released} still-parked={parked}"
    )
    return 0 if stayed == 0 and parked == 0 else 1


def _describe(record: QuarantineRecord, notice: ExpiryNotice | None, now: datetime) -> str:
    expiry = ""
    if notice is not None:
        soon = " (expires soon)" if notice.due([record], now) else ""
        expiry = f" expires={notice.expires_at(record).isoformat()}{soon}"
    return (
        f"{record.id} feed={record.feed} document={record.document_id} lsn={record.lsn} "
        f"reason={record.reason.value} at={record.quarantined_at.isoformat()}{expiry}"
        f"\n    {record.error}"
    )


def run_list(
    records: Sequence[QuarantineRecord],
    runtime: Runtime,
    parked: Sequence[ParkedAggregate] = (),
) -> int:
    """The records, then the parked aggregates (whose next changes the relay holds back)."""
    notice = expiry_notice(runtime.deployment.topology)
    now = datetime.now(UTC)
    for record in records:
        print(_describe(record, notice, now))
    print(f"{len(records)} quarantined record(s)")
    for aggregate in parked:
        print(
            f"parked aggregate={aggregate.partition_key} feed={aggregate.feed} "
            f"from_lsn={aggregate.from_lsn} last_parked={aggregate.parked_at.isoformat()}"
        )
    if parked:
        print(f"{len(parked)} parked aggregate(s)")
    return 0


def run_redrive(
    admin: QuarantineAdmin,
    runtime: Runtime,
    *,
    feed: str | None = None,
    limit: int = 100,
    aggregate: str | None = None,
    ids: Sequence[str] = (),
) -> int:
    """``quarantine redrive``: by aggregate (every feed, or ``feed``), by record ids (their
    aggregates), or everything listed (the ``limit`` oldest records and parked aggregates)."""
    if aggregate is not None:
        feeds = [feed] if feed is not None else [d.function_name for d in runtime.deployment.feeds]
        return _run_redrive([(f, aggregate) for f in feeds], [], runtime, admin)
    records = admin.list(feed, limit)
    parked = admin.parked_aggregates(feed, limit)
    if ids:
        wanted = set(ids)
        records = [r for r in records if r.id in wanted]
        missing = wanted - {r.id for r in records}
        if missing:
            print(f"not found (or beyond --limit): {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
        parked = []
    loose = [r for r in records if r.partition_key == _UNKNOWN]
    return _run_redrive(_aggregates_of(records, parked), loose, runtime, admin)


_MAX_LIMIT = 100_000


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= number <= _MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {_MAX_LIMIT}, not {value}")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m events quarantine")
    parser.add_argument("command", choices=["list", "redrive"])
    parser.add_argument(
        "ids",
        nargs="*",
        help="record ids; redrive re-drives their aggregates (default: every listed record)",
    )
    parser.add_argument("--feed", default=None, help="only records of this feed")
    parser.add_argument(
        "--aggregate",
        default=None,
        metavar="KEY",
        help="only the records of this aggregate (partition key value), in change order; "
        "redrive stops at the first one that stays quarantined, and releases the aggregate "
        "when none is left",
    )
    parser.add_argument("--limit", type=_limit, default=100, help="at most this many records")
    parser.add_argument(
        "--insecure-local", action="store_true", help="do not verify TLS (loopback dev server)"
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.aggregate is not None and args.ids:
        parser.error("give record ids or --aggregate, not both")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    # Adapters are imported here so that importing this module stays cheap.
    from events.adapters.cosmos.client import (  # noqa: PLC0415
        cosmos_client,
        quiet_loopback_tls_warnings,
    )
    from events.adapters.cosmos.stores import CosmosQuarantine  # noqa: PLC0415

    verify_tls = not args.insecure_local
    if not verify_tls:
        quiet_loopback_tls_warnings()
    try:
        runtime = Runtime.from_environment(os.environ, verify_tls=verify_tls)
        problems = check_resources(runtime, verify_tls=verify_tls)
        if problems:
            print(f"python -m events quarantine: {problems[0]}", file=sys.stderr)
            return 1
        settings = runtime.settings
        client = cosmos_client(
            settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout
        )
        container = client.get_database_client(settings.database).get_container_client(
            settings.role("quarantine")
        )
        admin = CosmosQuarantine(container)
        if args.command == "redrive":
            return run_redrive(
                admin,
                runtime,
                feed=args.feed,
                limit=args.limit,
                aggregate=args.aggregate,
                ids=args.ids,
            )
        records = admin.list(args.feed, args.limit)
        parked = admin.parked_aggregates(args.feed, args.limit)
        if args.aggregate is not None:
            records = change_order([r for r in records if r.partition_key == args.aggregate])
            parked = [p for p in parked if p.partition_key == args.aggregate]
        if args.ids:
            wanted = set(args.ids)
            records = [r for r in records if r.id in wanted]
            parked = []
        return run_list(records, runtime, parked)
    except SettingsError as exc:
        print(f"python -m events quarantine: {exc}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"python -m events quarantine: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
