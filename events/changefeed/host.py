"""The relay as a long-running process: one change-feed processor per feed of the catalog.

Same settings as the Function app (``Runtime.from_environment``); each feed's processor uses
the feed's lease prefix on the leases container, so the process and the Functions trigger can
share (and hand over) the same leases. ``python -m events run --help`` lists the options.
SIGINT/SIGTERM (or ``--duration``) stop it: current batches finish, leases are released.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from events.catalog import FEEDS
from events.changefeed.feed import StartFrom
from events.changefeed.processor import ChangeFeedProcessor, default_instance_id
from events.runtime import Runtime

if TYPE_CHECKING:
    from azure.cosmos import CosmosClient

__all__ = ["build_parser", "parse_args", "parse_start_from", "run_main"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT = 60.0
_N = TypeVar("_N", int, float)


def parse_start_from(value: str) -> StartFrom:
    """``beginning``, ``now`` or an ISO-8601 time (UTC when it has no offset)."""
    if value in ("beginning", "now"):
        return "beginning" if value == "beginning" else "now"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--start-from must be beginning, now or an ISO-8601 time, got {value!r}"
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(kind: Callable[[str], _N], *, zero: bool = False) -> Callable[[str], _N]:
    """An argparse type: a number greater than 0 (or 0 too, with ``zero``)."""

    def parse(value: str) -> _N:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number < 0 or (number == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"must be {'0 or more' if zero else 'greater than 0'}, not {value}"
            )
        return number

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, checked as a whole (errors exit with status 2 and a message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.renew_interval >= args.lease_duration:
        parser.error("--renew-interval must be shorter than --lease-duration")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m events run",
        description="Relay Cosmos DB changes to Service Bus as a long-running process.",
    )
    parser.add_argument("--instance-id", default=None, help="lease owner name (default: host-pid)")
    parser.add_argument(
        "--start-from",
        type=parse_start_from,
        default="beginning",
        help="beginning | now | ISO time; used only for feeds without leases yet",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument(
        "--insecure-local",
        action="store_true",
        help="do not verify TLS (a loopback dev server with a self-signed certificate)",
    )
    parser.add_argument(
        "--max-items", type=_number(int), default=100, help="documents per page (default 100)"
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=_number(float, zero=True),
        default=0.0,
        help="seconds between lease checkpoints (default 0: after every page; more replays "
        "that much after a crash, for fewer lease writes)",
    )
    parser.add_argument("--poll-interval", type=_number(float), default=1.0)
    parser.add_argument("--lease-duration", type=_number(float), default=60.0)
    parser.add_argument("--renew-interval", type=_number(float), default=17.0)
    parser.add_argument(
        "--acquire-interval",
        type=_number(float),
        default=13.0,
        help="seconds between lease balancing",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _runtime(environ: Mapping[str, str], verify_tls: bool) -> tuple[Runtime, CosmosClient]:
    # Adapters are imported here so that importing the host stays cheap.
    from events.stores import cosmos_client  # noqa: PLC0415

    runtime = Runtime.from_environment(environ, verify_tls=verify_tls)
    return runtime, cosmos_client(runtime.settings.cosmos, verify_tls=verify_tls)


def build_processors(
    runtime: Runtime, client: CosmosClient, args: argparse.Namespace
) -> list[ChangeFeedProcessor]:
    from events.changefeed.cosmos import CosmosChangeFeed, CosmosLeaseStore  # noqa: PLC0415
    from events.runtime import container_name  # noqa: PLC0415

    settings = runtime.settings
    database = client.get_database_client(settings.database)
    leases = CosmosLeaseStore(database.get_container_client(settings.containers.leases))
    instance_id = args.instance_id or default_instance_id()
    processors: list[ChangeFeedProcessor] = []
    for definition in FEEDS:
        container = database.get_container_client(
            container_name(settings, definition.container_setting)
        )
        processors.append(
            ChangeFeedProcessor(
                CosmosChangeFeed(container),
                leases,
                runtime.relay(definition.function_name).process,
                name=definition.lease_prefix,
                instance_id=instance_id,
                start_from=args.start_from,
                max_items=args.max_items,
                poll_interval=args.poll_interval,
                lease_duration=args.lease_duration,
                renew_interval=args.renew_interval,
                acquire_interval=args.acquire_interval,
                checkpoint_interval=args.checkpoint_interval,
            )
        )
    return processors


def run_processors(
    processors: list[ChangeFeedProcessor], stop: threading.Event, duration: float | None
) -> None:
    """Run each processor on its own thread until ``stop`` is set (or ``duration`` passed)."""
    threads = [
        threading.Thread(target=p.run, args=(stop,), name=f"processor-{p.name}") for p in processors
    ]
    for thread in threads:
        thread.start()
    stop.wait(duration)
    stop.set()
    for thread in threads:
        thread.join(_JOIN_TIMEOUT)


def run_main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # The SDKs log every HTTP request and AMQP state change at INFO: keep their warnings only.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    runtime, client = _runtime(os.environ, verify_tls=not args.insecure_local)
    processors = build_processors(runtime, client, args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping on signal %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    logger.info("relay running feeds=%d instance=%s", len(processors), processors[0].instance_id)
    run_processors(processors, stop, args.duration)
    return 0
