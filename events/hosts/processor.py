"""The relay as a long-running process: one change-feed processor per feed of the catalog.

Same settings as the Function app (``Runtime.from_environment``); each feed's processor uses
the feed's lease prefix on the leases container, so the process and the Functions trigger can
share (and hand over) the same leases. ``python -m events run --help`` lists the options.

Start-up: settings, keys, the database, every container and every destination are checked
first; a missing one prints one line naming it and exits with status 2. A server that does
not answer is not a configuration error: Cosmos DB is retried until it answers (the
processors need it), Service Bus is left to the relay's own retries.

Instance id: ``--instance-id``, else ``<host name>-<slot>``, the lowest slot (1, 2, ...) whose
lock file (``events-relay-<host name>-<slot>.lock`` in the temporary directory) this process
can lock exclusively. The id is stable across restarts, so a restarted process finds the
leases it owned before a crash and takes them back at once instead of waiting for them to
expire; two processes on one host lock different slots, so they never share an id. The OS
drops the lock when the process dies, however it dies (docs/changefeed.md, "Instance id").

Lag: every ``--lag-interval`` seconds (60) a monitor measures each feed's lag (its own
change-feed readers, the same leases) and records it in the process's OpenTelemetry gauges
``events.feed.lag.changes`` and ``events.feed.lag.seconds`` (``events.hosts.lag``).

Stop: SIGINT/SIGTERM (or ``--duration``) set the stop event and close the publisher (a send
in flight gives up at once); current batches finish or are abandoned without a checkpoint and
leases are released, best effort, within ``--shutdown-timeout``. After that bound the
process exits anyway (``os._exit``, logged): every thread that could hang is a daemon or is
left behind. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from events.changefeed.feed import StartFrom
from events.changefeed.processor import (
    DEFAULT_HANDLER_TIMEOUT,
    ChangeFeedProcessor,
)
from events.errors import SettingsError, TransientError
from events.hosts.lag import export_lag, monitor_for, process_gauges
from events.hosts.runtime import Runtime, check_resources
from events.hosts.telemetry import choose_exporter, configure_telemetry

if TYPE_CHECKING:
    from azure.cosmos import CosmosClient

__all__ = [
    "MAX_SLOTS",
    "SHUTDOWN_TIMEOUT",
    "SWITCH_INTERVAL_SECONDS",
    "InstanceClaim",
    "Shutdown",
    "build_parser",
    "claim_instance_id",
    "parse_args",
    "parse_log_level",
    "parse_start_from",
    "run_main",
    "tune_interpreter",
]

logger = logging.getLogger(__name__)

#: Default bound (seconds) between a stop signal and the end of the process.
SHUTDOWN_TIMEOUT = 25.0
#: Seconds between start-up attempts while Cosmos DB does not answer.
_START_RETRY = 5.0
#: Largest value any numeric option takes (about 11 days): beyond it, timedelta overflows.
_MAX_NUMBER = 1_000_000
_EXIT_FORCED = 1
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_N = TypeVar("_N", int, float)


#: The interpreter's thread switch interval in a relay process (Python's default: 5 ms). The
#: processor overlaps a page read, the handler and a checkpoint write on three threads; when a
#: response arrives, its thread waits for whichever thread runs Python code to let go of the
#: interpreter lock, up to the interval. On a fast network those waits add up to a tenth of a
#: page (docs/performance.md, "The change-feed processor against the reference loop").
SWITCH_INTERVAL_SECONDS = 0.0005
#: Processes on one host that get a default instance id; more need ``--instance-id``.
MAX_SLOTS = 64


class InstanceClaim:
    """An instance id held by this process: an exclusive lock on a file named after it, kept
    open for the life of the process (released by ``close`` or by the OS on exit)."""

    def __init__(self, instance_id: str, descriptor: int | None) -> None:
        self.instance_id = instance_id
        self._descriptor = descriptor

    def close(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``; None when another process
    holds it (or the file belongs to another user)."""
    import fcntl  # noqa: PLC0415 - POSIX only; the Functions host and the servers are Linux

    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def claim_instance_id(
    requested: str | None = None, *, host: str | None = None, lock_dir: Path | None = None
) -> InstanceClaim:
    """``requested`` as is, else ``<host>-<slot>`` for the lowest free slot (see the module
    docstring). SettingsError when every slot is taken."""
    if requested:
        return InstanceClaim(requested, None)
    name = re.sub(r"[^A-Za-z0-9.-]", "-", host or socket.gethostname()) or "host"
    directory = lock_dir or Path(tempfile.gettempdir())
    for slot in range(1, MAX_SLOTS + 1):
        instance_id = f"{name}-{slot}"
        descriptor = _try_lock(directory / f"events-relay-{instance_id}.lock")
        if descriptor is not None:
            return InstanceClaim(instance_id, descriptor)
    raise SettingsError(
        f"{MAX_SLOTS} relay processes already hold an instance id on host {name} "
        f"(lock files in {directory}): pass --instance-id"
    )


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
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {value}")
        if number < 0 or (number == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"must be {'0 or more' if zero else 'greater than 0'}, not {value}"
            )
        if number > _MAX_NUMBER:
            raise argparse.ArgumentTypeError(f"must be at most {_MAX_NUMBER}, not {value}")
        return number

    return parse


def parse_log_level(value: str) -> str:
    """An argparse type: a logging level name, any case."""
    level = value.strip().upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(_LOG_LEVELS)} (any case), not {value!r}"
        )
    return level


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
    parser.add_argument(
        "--instance-id",
        default=None,
        help="lease owner name, unique among running processes (default: <host name>-<slot>, "
        "stable across restarts: a restart takes its leases back at once)",
    )
    parser.add_argument(
        "--start-from",
        type=parse_start_from,
        default="beginning",
        help="beginning | now | ISO time; used only for feeds without leases yet",
    )
    parser.add_argument("--duration", type=_number(float), default=None, help="stop after SECONDS")
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
    parser.add_argument(
        "--handler-timeout",
        type=_number(float),
        default=DEFAULT_HANDLER_TIMEOUT,
        help="seconds a batch may be handled before its lease is no longer renewed, so that "
        f"another instance takes over (default {DEFAULT_HANDLER_TIMEOUT:g})",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_number(float),
        default=SHUTDOWN_TIMEOUT,
        help="seconds from SIGTERM/SIGINT to exit, leases released best effort "
        f"(default {SHUTDOWN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--lag-interval",
        type=_number(float),
        default=60.0,
        help="seconds between two measures of the lag exported as the gauges "
        "events.feed.lag.changes and events.feed.lag.seconds (default 60)",
    )
    parser.add_argument("--log-level", type=parse_log_level, default="INFO")
    return parser


class Shutdown:
    """Stop on SIGINT/SIGTERM within a bound: set ``stop``, run the stop callbacks (close the
    publisher), and hard-exit if the process is still alive ``timeout`` seconds later."""

    def __init__(self, stop: threading.Event, timeout: float) -> None:
        self.stop = stop
        self.timeout = timeout
        self._callbacks: list[Callable[[], object]] = []
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def on_stop(self, callback: Callable[[], object]) -> None:
        with self._lock:
            self._callbacks.append(callback)
            stopping = self._deadline is not None
        if stopping:
            callback()

    def remaining(self) -> float:
        with self._lock:
            deadline = self._deadline
        return self.timeout if deadline is None else max(0.0, deadline - time.monotonic())

    def begin(self, reason: str) -> None:
        """Start stopping (idempotent): the bound starts now."""
        with self._lock:
            if self._deadline is not None:
                return
            self._deadline = time.monotonic() + self.timeout
            callbacks = list(self._callbacks)
        logger.info("stopping (%s): exiting within %g s", reason, self.timeout)
        self.stop.set()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a failing callback must not stop the others
                logger.exception("stop callback failed: %r", callback)
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set() and self._deadline is not None:
            force_exit(f"second {name}")
        # The work is done on a thread: a signal handler must not block the main thread.
        threading.Thread(target=self.begin, args=(f"signal {name}",), daemon=True).start()

    def _watchdog(self) -> None:
        time.sleep(self.remaining())
        force_exit(f"not stopped {self.timeout:g} s after the stop request")


def force_exit(reason: str, code: int = _EXIT_FORCED) -> None:
    """Exit now, without waiting for threads (a call hung in an SDK cannot be interrupted)."""
    alive = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
    logger.warning("exiting now (%s); threads left: %s", reason, ", ".join(alive) or "none")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _start(
    environ: Mapping[str, str], args: argparse.Namespace, stop: threading.Event
) -> tuple[Runtime, CosmosClient] | None:
    """Settings, clients and the start-up check; SettingsError is for the caller (exit 2).
    While Cosmos DB does not answer, tries again every few seconds; None when stopped."""
    # Adapters are imported here so that importing the host stays cheap.
    from events.adapters.cosmos.client import cosmos_client  # noqa: PLC0415

    verify_tls = not args.insecure_local
    unavailable = False
    while not stop.is_set():
        try:
            runtime = Runtime.from_environment(environ, verify_tls=verify_tls)
            client = cosmos_client(
                runtime.settings.cosmos,
                verify_tls=verify_tls,
                timeout=runtime.settings.cosmos_timeout,
            )
            problems = check_resources(runtime, verify_tls=verify_tls)
        except TransientError as exc:
            if not unavailable:
                logger.warning("start-up: %s; trying again every %g s", exc, _START_RETRY)
                unavailable = True
            stop.wait(_START_RETRY)
            continue
        for problem in problems:
            # Not a configuration error, and already logged (one WARNING per outage) by the
            # adapter: the relay retries these at run time.
            logger.debug("start-up check, retried at run time: %s", problem)
        return runtime, client
    return None


def build_processors(
    runtime: Runtime, client: CosmosClient, args: argparse.Namespace, instance_id: str
) -> list[ChangeFeedProcessor]:
    from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore  # noqa: PLC0415

    settings = runtime.settings
    database = client.get_database_client(settings.database)
    leases = CosmosLeaseStore(database.get_container_client(settings.role("leases")))
    processors: list[ChangeFeedProcessor] = []
    for definition in runtime.deployment.feeds:
        container = database.get_container_client(settings.container(definition.container))
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
                handler_timeout=args.handler_timeout,
            )
        )
    return processors


def run_processors(
    processors: list[ChangeFeedProcessor],
    stop: threading.Event,
    duration: float | None,
    shutdown: Shutdown | None = None,
) -> bool:
    """Run each processor on its own thread until ``stop`` is set (or ``duration`` passed);
    True when every processor thread ended within the shutdown bound."""
    shutdown = shutdown or Shutdown(stop, SHUTDOWN_TIMEOUT)
    # Daemon threads: a processor stuck in an SDK call must not keep the process alive.
    threads = [
        threading.Thread(target=p.run, args=(stop,), name=f"processor-{p.name}", daemon=True)
        for p in processors
    ]
    for thread in threads:
        thread.start()
    stop.wait(duration)
    shutdown.begin("duration elapsed" if duration is not None else "stop requested")
    for thread in threads:
        thread.join(shutdown.remaining())
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        logger.warning(
            "processor threads still running after %g s: %s", shutdown.timeout, ", ".join(stuck)
        )
    return not stuck


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The SDKs log every HTTP request and AMQP state change at INFO: keep their warnings only.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))


def tune_interpreter() -> None:
    """Settings of the whole process that only a host owning it may make (never on import)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def run_main(argv: list[str]) -> int:
    args = parse_args(argv)
    tune_interpreter()
    configure_logging(args.log_level)
    try:
        choose_exporter(os.environ)  # a bad telemetry setting fails before any wait
    except SettingsError as exc:
        print(f"python -m events run: {exc}", file=sys.stderr)
        return 2
    if args.insecure_local:
        from events.adapters.cosmos.client import quiet_loopback_tls_warnings  # noqa: PLC0415

        quiet_loopback_tls_warnings()
    stop = threading.Event()
    shutdown = Shutdown(stop, args.shutdown_timeout)
    shutdown.install()
    try:
        started = _start(os.environ, args, stop)
    except SettingsError as exc:
        print(f"python -m events run: {exc}", file=sys.stderr)
        return 2
    if started is None:
        return 0
    runtime, client = started
    # After the start-up check, so that a configuration problem stays a single line.
    configure_telemetry(os.environ)
    close = getattr(runtime.publisher, "close", None)
    if callable(close):
        shutdown.on_stop(close)
    try:
        claim = claim_instance_id(args.instance_id)
    except SettingsError as exc:
        print(f"python -m events run: {exc}", file=sys.stderr)
        return 2
    # The claim (its lock) is held until the process exits, leases released or not.
    processors = build_processors(runtime, client, args, claim.instance_id)
    logger.info(
        "relay running feeds=%d instance=%s processors=%s",
        len(processors),
        processors[0].instance_id,
        ",".join(p.name for p in processors),
    )
    monitor = monitor_for(runtime.settings, runtime.deployment, verify_tls=not args.insecure_local)
    export_lag(monitor, process_gauges(), interval=args.lag_interval, stop=stop)
    if not run_processors(processors, stop, args.duration, shutdown):
        force_exit("processor threads did not stop")
    claim.close()
    return 0
