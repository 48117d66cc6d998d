"""The whole flow on one machine: ``make run`` / ``python -m events dev``.

Starts the local Cosmos DB server and the local Service Bus broker, creates the database,
containers and entities from ``infra/topology.json``, starts the relay (the Python change-feed
processor, as a child process, with the same handler as the Function app), then runs:

- a demo writer that places orders through the outbox writer, updates them (CDC), appends
  payment events to event-sourced streams and ships orders through the outbox;
- a demo consumer that receives from the session subscription ``all`` and the ``payments``
  queue through the idempotent consumer helper (inbox in Cosmos DB), many sessions at once,
  and prints each event as it arrives.

A status line every two seconds shows the counts below and ``pending`` (expected, not yet
received). Ctrl-C (or ``--duration``) stops the writer; the demo then drains: it waits while
events keep arriving and gives up only after ``--drain-idle`` seconds without a new one (or
after ``--drain-limit`` seconds in all), printing progress. A second Ctrl-C gives up at once.
Then everything stops, the data folder is removed (kept with ``--keep-data``) and the last line
is the summary::

    written=N cdc=N published=N received=N duplicates=N lost=N

- ``written``: integration events the writer's APIs returned ids for: outbox events
  (``OrderPlaced``, ``OrderShipped``) and public stream events (``PaymentAuthorized``,
  ``PaymentCaptured``). Each must arrive.
- ``cdc``: orders written. The latest-version change feed may merge quick updates of an order,
  so not every status becomes an ``OrderUpserted``; each order's final status must arrive.
- ``published``: messages the broker enqueued (after duplicate detection), including every
  ``OrderUpserted`` the relay published, intermediate statuses too; not a measure of loss.
- ``received``: of the ``written + cdc`` expectations, how many arrived at the consumer.
- ``duplicates``: deliveries the idempotent consumer skipped because its inbox had the id.
- ``lost``: ``written + cdc - received`` when the drain ended. The exit code is 0 only if
  ``lost=0``.

All terminal output (event lines, status, chaos, drain progress, errors and log records) goes
through one ``Printer``, so lines from different threads never interleave.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import FrameType

from azure.cosmos import DatabaseProxy
from azure.servicebus import ServiceBusClient

from devstack.demo.consumer import Consumer
from devstack.demo.drain import DrainRule, DrainVerdict
from devstack.demo.ledger import Ledger, Tally
from devstack.demo.printer import Printer, PrinterHandler
from devstack.demo.stack import (
    DeclaredConsumers,
    Relay,
    local_stack,
    pooled_client,
    relay_environment,
)
from devstack.demo.writer import Writer
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.stores import CosmosInbox
from events.deployment.topology import Topology, load_topology

__all__ = [
    "Consumer",
    "Demo",
    "DrainRule",
    "DrainVerdict",
    "Ledger",
    "Printer",
    "Relay",
    "Tally",
    "Writer",
    "local_stack",
    "main",
    "relay_environment",
    "summary_line",
]

#: Receiving threads per destination. One receiver serves about one session a second (see
#: ``devstack.demo.consumer``); every order and payment stream is a session.
CONSUMER_THREADS = {"integration-events": 12, "payments": 4}
_STATUS_SECONDS = 2.0
_CHAOS_SECONDS = 10.0


def summary_line(tally: Tally, published: int) -> str:
    return (
        f"written={tally.written} cdc={tally.cdc} published={published} "
        f"received={tally.received} duplicates={tally.duplicates} lost={tally.missing}"
    )


class Demo:
    def __init__(self, args: argparse.Namespace, printer: Printer | None = None) -> None:
        self.args = args
        self.stop = threading.Event()
        self.ledger = Ledger()
        self.printer = printer if printer is not None else Printer()

    def run(self) -> int:
        data_dir = Path(tempfile.mkdtemp(prefix="relay-dev-"))
        self.printer.line(f"dev stack data and relay log in {data_dir}")
        try:
            published = self._run(data_dir)
        finally:
            if self.args.keep_data:
                self.printer.line(f"dev stack data kept in {data_dir} (cosmos.json, relay.log)")
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
        tally = self.ledger.tally()
        self.printer.line(summary_line(tally, published))
        return 0 if tally.missing == 0 else 1

    def _run(self, data_dir: Path) -> int:
        """Run the flow; returns what the broker published."""
        topology = load_topology()
        with local_stack(topology, data_dir) as (cosmos, bus):
            self.printer.line(f"cosmos     {cosmos.endpoint}")
            self.printer.line(f"servicebus {bus.connection_string}")
            relay = Relay(relay_environment(cosmos, bus), data_dir / "relay.log")
            relay.start()
            declared = DeclaredConsumers(relay_environment(cosmos, bus), data_dir / "consume.log")
            if topology.service_bus.consumers:
                declared.start()
            try:
                database = cosmos.client().get_database_client(topology.cosmos.database)
                threads_total = sum(CONSUMER_THREADS.values())
                inbox = CosmosInbox(
                    pooled_client(cosmos, threads_total)
                    .get_database_client(topology.cosmos.database)
                    .get_container_client("inbox")
                )
                writer = Writer(database, self.ledger, self.args.rate, self.args.seed)
                with ServiceBusClient.from_connection_string(bus.connection_string) as client:
                    consumer = Consumer(
                        client, inbox, self.ledger, quiet=self.args.quiet, printer=self.printer
                    )
                    consuming = threading.Event()
                    threads = [
                        threading.Thread(target=consumer.run, args=(d, consuming), daemon=True)
                        for d, count in CONSUMER_THREADS.items()
                        for _ in range(count)
                    ]
                    for thread in threads:
                        thread.start()
                    try:
                        self._write_until_stopped(writer, bus, relay)
                        self._drain(bus)
                    finally:
                        consuming.set()
                        relay.stop()  # before the consumer threads end: nothing new arrives
                        for thread in threads:
                            thread.join(timeout=10)
                self._report_declared(database, topology)
            finally:
                relay.stop()
                declared.stop()
            return sum(bus.stats.messages.values())

    def _report_declared(self, database: DatabaseProxy, topology: Topology) -> None:
        """One line per declared consumer: the documents its handler wrote so far."""
        for consumer in topology.service_bus.consumers:
            container = database.get_container_client(consumer.container)
            # A transactional consumer's inbox records and positions (``kind``) live in the
            # same container; only the handler's documents are counted.
            count = sum(
                1
                for d in container.query_items(
                    "SELECT c.kind FROM c", enable_cross_partition_query=True
                )
                if "kind" not in d
            )
            self.printer.line(
                f"declared consumer {consumer.name}: {count} documents in {consumer.container} "
                "(python -m events consume, log consume.log)"
            )

    def _status(self, bus: LocalServiceBus, prefix: str = "") -> None:
        tally = self.ledger.tally()
        published = sum(bus.stats.messages.values())
        self.printer.line(
            f"[{time.strftime('%H:%M:%S')}] {prefix}written={tally.written} cdc={tally.cdc} "
            f"published={published} received={tally.received} "
            f"duplicates={tally.duplicates} pending={tally.missing}"
        )

    def _write_until_stopped(self, writer: Writer, bus: LocalServiceBus, relay: Relay) -> None:
        writing = threading.Thread(
            target=self._write, args=(writer,), name="demo-writer", daemon=True
        )
        writing.start()
        deadline = None if self.args.duration is None else time.monotonic() + self.args.duration
        last_chaos = time.monotonic()
        while not self.stop.wait(_STATUS_SECONDS):
            self._status(bus)
            if self.args.chaos and time.monotonic() - last_chaos >= _CHAOS_SECONDS:
                last_chaos = time.monotonic()
                self._inject_chaos(bus, relay)
            if deadline is not None and time.monotonic() >= deadline:
                self.stop.set()
        writing.join(timeout=10)

    def _write(self, writer: Writer) -> None:
        try:
            writer.run(self.stop)
        except Exception as exc:  # noqa: BLE001 - reported, and the demo stops writing
            self.printer.error(f"  writer failed: {type(exc).__name__}: {exc}")
            self.stop.set()

    def _inject_chaos(self, bus: LocalServiceBus, relay: Relay) -> None:
        self.printer.line(
            "  chaos: relay killed with SIGKILL and restarted; broker drops after 1 transfer"
        )
        relay.kill()
        bus.faults.drop_connection_after(1)
        relay.start()

    def _drain(self, bus: LocalServiceBus) -> None:
        args = self.args
        self.printer.line(
            "writer stopped; draining until nothing is missing, or no new event for "
            f"{args.drain_idle:g} s, or {args.drain_limit:g} s in all (Ctrl-C again to give up)"
        )
        rule = DrainRule(args.drain_idle, args.drain_limit)
        interrupted = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
        last_progress_line = time.monotonic()
        while True:
            with self.ledger.lock:
                arrived = self.ledger.handled
            verdict = rule.observe(arrived, self.ledger.missing())
            if verdict is not DrainVerdict.WAIT or interrupted.is_set():
                break
            if time.monotonic() - last_progress_line >= _STATUS_SECONDS:
                last_progress_line = time.monotonic()
                self._status(bus, prefix=f"draining {rule.elapsed:.0f}s: ")
            interrupted.wait(0.5)
        self._status(bus)
        if interrupted.is_set():
            self.printer.line("drain: given up (Ctrl-C)")
        elif verdict is DrainVerdict.STALLED:
            self.printer.line(f"drain: no new event for {rule.idle_seconds:g} s, giving up")
        elif verdict is DrainVerdict.LIMIT:
            self.printer.line(f"drain: limit of {rule.limit_seconds:g} s reached, giving up")
        else:
            self.printer.line(f"drain: everything arrived after {rule.elapsed:.0f} s")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m events dev",
        description="Run the relay end to end on the local dev stack (no cloud, no Docker).",
    )
    parser.add_argument("--duration", type=_positive, default=None, help="stop after SECONDS")
    parser.add_argument("--rate", type=_positive, default=4.0, help="writer operations per second")
    parser.add_argument("--seed", type=int, default=7, help="demo data seed")
    parser.add_argument(
        "--drain-idle",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="after the writer stops, give up when no new event arrived for SECONDS (30)",
    )
    parser.add_argument(
        "--drain-limit",
        type=_positive,
        default=600.0,
        metavar="SECONDS",
        help="after the writer stops, give up after SECONDS in all (600)",
    )
    parser.add_argument("--quiet", action="store_true", help="no line per received event")
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="every 10 s SIGKILL and restart the relay, and drop a broker connection",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the data folder (cosmos.json, relay.log) and print where it is",
    )
    return parser


def _route_logging(printer: Printer) -> None:
    """Log records through the printer, so they never break a line of another thread."""
    root = logging.getLogger()
    root.handlers[:] = [PrinterHandler(printer)]
    root.setLevel(logging.WARNING)
    # pyamqp warns on every "no session available" answer (its attach callback reads the
    # session properties of a refused attach); the consumer reports real failures itself.
    logging.getLogger("azure").setLevel(logging.ERROR)
    # proton logs an ERROR for every reply to a client that already hung up: the SDK closes
    # its socket right after its AMQP close, without waiting for the broker's.
    logging.getLogger("proton").setLevel(logging.CRITICAL)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    printer = Printer()
    _route_logging(printer)
    demo = Demo(args, printer)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        demo.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return demo.run()
    except Exception as exc:  # noqa: BLE001 - reported on the terminal through the printer
        printer.error(traceback.format_exc().rstrip())
        printer.error(f"dev: {type(exc).__name__}: {exc}")
        return 2
