"""``python -m events consume``: run the declared consumers outside Azure Functions.

Each consumer of the declaration (``serviceBus.consumers``, or those named by ``--consumer``)
gets ``--receivers`` session receivers on its subscription (the topic and subscription in use
come from its settings, as for the Functions trigger), the helper built by
``events.hosts.consumers.build_consumer`` and the same message-to-event conversion. Messages
are settled by ``events.adapters.receiving``: complete when handled or a duplicate, abandon on
a transient error (redelivered), dead-letter on a permanent one.

Same settings as the app (``RELAY_COSMOS``, ``RELAY_SERVICEBUS``, the containers', topics' and
subscriptions' settings); ``--insecure-local`` only for the loopback dev server. Stops on
SIGINT/SIGTERM or after ``--duration`` seconds. Exit status: 0 stopped, 2 a configuration
problem (one line naming it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from events.availability import AvailabilityLog
from events.core.handling import Received
from events.deployment.catalog import load_deployment
from events.errors import SettingsError, is_transient
from events.hosts.consumers import consume
from events.hosts.runtime import Runtime

__all__ = ["main"]

_PROG = "python -m events consume"
#: Bound (seconds) on joining the receiver threads once stopped (each waits at most a session
#: wait plus one batch of handling).
_JOIN_SECONDS = 30.0

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Run the declared consumers (serviceBus.consumers) with session "
        "receivers, as the Functions app's Service Bus triggers do.",
    )
    parser.add_argument(
        "--consumer",
        action="append",
        default=None,
        metavar="NAME",
        help="a declared consumer to run (repeat for several; default: all)",
    )
    parser.add_argument(
        "--receivers",
        type=int,
        default=4,
        metavar="N",
        help="session receivers per consumer (sessions served at once; default 4)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument("--declaration", type=Path, default=None, metavar="PATH")
    parser.add_argument(
        "--insecure-local",
        action="store_true",
        help="do not verify TLS (a loopback dev server with a self-signed certificate)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _handler(
    runtime: Runtime, name: str, availability: AvailabilityLog
) -> Callable[[Received], object]:
    where = f"consumer {name}"

    def handle(message: Received) -> object:
        try:
            outcome = consume(runtime.consumer(name), message)
        except Exception as exc:
            if is_transient(exc):
                availability.down(where, f"{type(exc).__name__}: {exc}; the message is retried")
            raise
        availability.up(where)
        return outcome

    return handle


def run_consumers(
    environ: Mapping[str, str],
    stop: threading.Event,
    *,
    names: list[str] | None = None,
    receivers: int = 4,
    declaration: Path | None = None,
    verify_tls: bool = True,
) -> None:
    """Receive for the declared consumers until ``stop`` is set. SettingsError for the caller."""
    from events.adapters import servicebus  # noqa: PLC0415
    from events.adapters.receiving import SessionReceiving  # noqa: PLC0415

    deployment = load_deployment(declaration)
    declared = [c.name for c in deployment.consumers]
    chosen = names if names else declared
    if not chosen:
        raise SettingsError(f"{deployment.path} declares no consumer (serviceBus.consumers)")
    for name in chosen:
        if name not in declared:
            raise SettingsError(
                f"no consumer {name!r} is declared (declared: {', '.join(declared) or 'none'})"
            )
    runtime = Runtime.from_environment(environ, verify_tls=verify_tls, deployment=deployment)
    for name in chosen:
        runtime.consumer(name)  # build each helper now: a bad mode is a start-up error
    client = servicebus.service_bus_client(runtime.settings.service_bus)
    availability = AvailabilityLog(logger)
    threads = []
    for name in chosen:
        topic, subscription = runtime.settings.consumer_entities[name]
        receiving = SessionReceiving(client, topic, subscription)
        handle = _handler(runtime, name, availability)

        def reconnecting(exc: BaseException, where: str = receiving.where) -> None:
            availability.down(f"receiver {where}", f"{type(exc).__name__}: {exc}; reconnecting")

        for index in range(receivers):
            threads.append(
                threading.Thread(
                    target=receiving.run,
                    args=(handle, stop, reconnecting),
                    name=f"consume-{name}-{index}",
                    daemon=True,
                )
            )
        logger.info(
            "consumer running consumer=%s subscription=%s receivers=%d",
            name,
            receiving.where,
            receivers,
        )
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(_JOIN_SECONDS)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.receivers < 1:
        print(f"{_PROG}: --receivers must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.insecure_local:
        from events.adapters.cosmos.client import quiet_loopback_tls_warnings  # noqa: PLC0415

        quiet_loopback_tls_warnings()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("stopping on signal %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        run_consumers(
            os.environ,
            stop,
            names=args.consumer,
            receivers=args.receivers,
            declaration=args.declaration,
            verify_tls=not args.insecure_local,
        )
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    return 0
