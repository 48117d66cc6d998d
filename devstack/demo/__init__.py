"""The whole flow on one machine: ``make run`` / ``python -m events dev``.

Starts the local Cosmos DB server and the local Service Bus broker, creates the database,
containers and entities from ``infra/topology.json``, starts the relay (the Python change-feed
processor, as a child process, with the same handler as the Function app), then runs:

- a demo writer that places orders through the outbox writer, updates them (CDC), appends
  payment events to event-sourced streams and ships orders through the outbox;
- a demo consumer that receives from the session subscription ``all`` and the ``payments``
  queue through the idempotent consumer helper and prints each event as it arrives.

A counter line shows written / published / received / lag. Ctrl-C (or ``--duration``) stops
the writer, waits for the consumer to catch up, stops everything, and prints
``written=N published=N received=N duplicates=N lost=N`` as the last line.

``written`` counts the events the writer asked for (outbox events and public stream events),
``received``/``lost`` are measured against them; CDC events (``OrderUpserted``) come on top: the
latest-version change feed may merge quick updates, so each order's *final* status must arrive
and an order whose final status never arrives counts as lost. ``published`` is what the broker
accepted after duplicate detection, CDC events included.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from azure.servicebus import ServiceBusClient

from devstack.demo.consumer import Consumer
from devstack.demo.ledger import Ledger
from devstack.demo.stack import Relay, local_stack, relay_environment
from devstack.demo.writer import Writer
from devstack.servicebus import LocalServiceBus
from events.stores import CosmosInbox
from events.topology import load_topology

__all__ = [
    "Consumer",
    "Demo",
    "Ledger",
    "Relay",
    "Writer",
    "local_stack",
    "main",
    "relay_environment",
]


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.ledger = Ledger()

    def run(self) -> int:
        topology = load_topology()
        data_dir = Path(tempfile.mkdtemp(prefix="relay-dev-"))
        print(f"dev stack data and relay log in {data_dir}")
        with local_stack(topology, data_dir) as (cosmos, bus):
            print(f"cosmos     {cosmos.endpoint}")
            print(f"servicebus {bus.connection_string}")
            relay = Relay(relay_environment(cosmos, bus), data_dir / "relay.log")
            relay.start()
            database = cosmos.client().get_database_client(topology.cosmos.database)
            inbox = CosmosInbox(database.get_container_client("inbox"))
            writer = Writer(database, self.ledger, self.args.rate, self.args.seed)
            with ServiceBusClient.from_connection_string(bus.connection_string) as client:
                consumer = Consumer(client, inbox, self.ledger, quiet=self.args.quiet)
                consuming = threading.Event()
                threads = [
                    threading.Thread(target=consumer.run, args=(d, consuming), daemon=True)
                    for d in ("integration-events",) * 4 + ("payments",)
                ]
                for thread in threads:
                    thread.start()
                try:
                    self._write_until_stopped(writer, bus, relay)
                    self._drain(bus)
                finally:
                    consuming.set()
                    relay.stop()
                    for thread in threads:
                        thread.join(timeout=5)
            published = sum(bus.stats.messages.values())
        written, received, duplicates = self.ledger.counts()
        lost = self.ledger.missing()
        print(
            f"written={written} published={published} received={received} "
            f"duplicates={duplicates} lost={lost}"
        )
        return 0 if lost == 0 else 1

    def _status(self, bus: LocalServiceBus) -> None:
        written, received, duplicates = self.ledger.counts()
        published = sum(bus.stats.messages.values())
        print(
            f"[{time.strftime('%H:%M:%S')}] written={written} published={published} "
            f"received={received} duplicates={duplicates} lag={written - received}",
            flush=True,
        )

    def _write_until_stopped(self, writer: Writer, bus: LocalServiceBus, relay: Relay) -> None:
        writing = threading.Thread(target=writer.run, args=(self.stop,), daemon=True)
        writing.start()
        deadline = None if self.args.duration is None else time.monotonic() + self.args.duration
        last_chaos = time.monotonic()
        while not self.stop.wait(2.0):
            self._status(bus)
            if self.args.chaos and time.monotonic() - last_chaos > 10:
                last_chaos = time.monotonic()
                self._inject_chaos(bus, relay)
            if deadline is not None and time.monotonic() >= deadline:
                self.stop.set()
        writing.join(timeout=10)

    def _inject_chaos(self, bus: LocalServiceBus, relay: Relay) -> None:
        print("  chaos: relay killed with SIGKILL and restarted; broker drops after 1 transfer")
        relay.kill()
        bus.faults.drop_connection_after(1)
        relay.start()

    def _drain(self, bus: LocalServiceBus) -> None:
        print("writer stopped; waiting for the consumer to catch up (Ctrl-C again to give up)")
        deadline = time.monotonic() + self.args.drain_timeout
        interrupted = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        while self.ledger.missing() and time.monotonic() < deadline and not interrupted.is_set():
            interrupted.wait(1.0)
        self._status(bus)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m events dev",
        description="Run the relay end to end on the local dev stack (no cloud, no Docker).",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument("--rate", type=float, default=4.0, help="writer operations per second")
    parser.add_argument("--seed", type=int, default=7, help="demo data seed")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--quiet", action="store_true", help="no line per received event")
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="every 10 s SIGKILL and restart the relay, and drop a broker connection",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    demo = Demo(args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        demo.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return demo.run()
