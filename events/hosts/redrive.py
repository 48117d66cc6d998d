"""Operating the quarantine: list what is parked, re-drive it once the cause is fixed.

``python -m events quarantine list [--feed F] [--limit N]``  (each record with its expiry)
``python -m events quarantine redrive [--feed F] [--limit N] [ID ...]``
``python -m events quarantine redrive --aggregate KEY [--feed F]``

With ``--aggregate`` (a partition key value: the aggregate's id) the records of that aggregate
are re-driven in change order (``_lsn`` ascending, then the time they were quarantined), one
feed at a time, and the re-drive stops at the first record that stays quarantined: the later
ones stay parked behind it, as the relay parked them, so the aggregate's events are never
published out of order by a re-drive. ``list --aggregate KEY`` shows them in that order.

Re-driving runs the stored document through the same relay as the feed it came from. When it
now maps and publishes, the record is deleted; when it fails again, the relay quarantines it
again under the same id with the new error, and it stays. Event ids are deterministic, so a
re-drive of something already published is dropped by duplicate detection. A re-driven event
arrives after later events of its aggregate: consumers see that from ``sequence``.
Output names ids and reasons, never document bodies.

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

from events.core.quarantine import ExpiryNotice, QuarantineAdmin, QuarantineRecord
from events.deployment.topology import Topology
from events.errors import RelayError, SettingsError
from events.hosts.runtime import Runtime, check_resources

__all__ = [
    "EXPIRY_NOTICE",
    "RedriveResult",
    "change_order",
    "expiry_notice",
    "main",
    "redrive",
    "redrive_aggregate",
    "warn_expiring",
]

logger = logging.getLogger(__name__)

#: How long before a record's expiry it is announced (docs/security.md).
EXPIRY_NOTICE: Final = timedelta(days=7)
#: Records read per expiry check, oldest first (the oldest expire first).
_EXPIRY_SCAN = 1000


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
    """Relay one quarantined document again; delete its record when nothing is left parked."""
    if record.document is None:
        return RedriveResult(record.id, 0, resolved=False)  # too large to keep: see its record
    outcome = runtime.relay(record.feed).process([record.document])
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


def redrive_aggregate(
    records: Sequence[QuarantineRecord], runtime: Runtime, admin: QuarantineAdmin
) -> list[tuple[QuarantineRecord, RedriveResult | None]]:
    """Re-drive one aggregate's records in change order, per feed, stopping at the first one
    that stays quarantined; each record with its result, None for those left parked behind."""
    outcomes: list[tuple[QuarantineRecord, RedriveResult | None]] = []
    stopped: set[str] = set()
    for record in change_order(records):
        if record.feed in stopped:
            outcomes.append((record, None))
            continue
        result = redrive(record, runtime, admin)
        outcomes.append((record, result))
        if not result.resolved:
            stopped.add(record.feed)
    return outcomes


def _run_aggregate(
    aggregate: str, records: Sequence[QuarantineRecord], runtime: Runtime, admin: QuarantineAdmin
) -> int:
    outcomes = redrive_aggregate(records, runtime, admin)
    blocker: dict[str, str] = {}
    for number, (record, result) in enumerate(outcomes, start=1):
        if result is None:
            state = f"not tried: parked behind {blocker[record.feed]}"
        elif result.resolved:
            state = f"published={result.published}"
        else:
            blocker[record.feed] = record.id
            state = "still quarantined: later records of the aggregate stay parked behind it"
        print(f"[{number}/{len(outcomes)}] {record.id} lsn={record.lsn} {state}", flush=True)
    resolved = sum(1 for _, result in outcomes if result is not None and result.resolved)
    print(
        f"aggregate={aggregate} re-driven={resolved} still-quarantined={len(outcomes) - resolved}"
    )
    return 0 if resolved == len(outcomes) else 1


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


def run(
    command: str,
    records: Sequence[QuarantineRecord],
    runtime: Runtime,
    admin: QuarantineAdmin,
) -> int:
    if command == "list":
        notice = expiry_notice(runtime.deployment.topology)
        now = datetime.now(UTC)
        for record in records:
            print(_describe(record, notice, now))
        print(f"{len(records)} quarantined record(s)")
        return 0
    resolved = 0
    for number, record in enumerate(records, start=1):
        result = redrive(record, runtime, admin)
        resolved += result.resolved
        state = f"published={result.published}" if result.resolved else "still quarantined"
        print(f"[{number}/{len(records)}] {record.id} {state}", flush=True)
    print(f"re-driven={resolved} still-quarantined={len(records) - resolved}")
    return 0 if resolved == len(records) else 1


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
    parser.add_argument("ids", nargs="*", help="record ids (default: every listed record)")
    parser.add_argument("--feed", default=None, help="only records of this feed")
    parser.add_argument(
        "--aggregate",
        default=None,
        metavar="KEY",
        help="only the records of this aggregate (partition key value), in change order; "
        "redrive stops at the first one that stays quarantined",
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
        records = admin.list(args.feed, args.limit)
        if args.aggregate is not None:
            records = change_order([r for r in records if r.partition_key == args.aggregate])
            if args.command == "redrive":
                return _run_aggregate(args.aggregate, records, runtime, admin)
        if args.ids:
            wanted = set(args.ids)
            records = [r for r in records if r.id in wanted]
            missing = wanted - {r.id for r in records}
            if missing:
                print(
                    f"not found (or beyond --limit): {', '.join(sorted(missing))}", file=sys.stderr
                )
                return 2
        return run(args.command, records, runtime, admin)
    except SettingsError as exc:
        print(f"python -m events quarantine: {exc}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"python -m events quarantine: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
