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
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from azure.cosmos import DatabaseProxy
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from devstack.cosmos import LocalCosmos
from devstack.provision import provision_cosmos
from devstack.servicebus import LocalServiceBus
from events import settings as names
from events.consumer import IdempotentConsumer
from events.contracts import OrderPlacedV1, OrderShippedV1
from events.envelope import IntegrationEvent, deterministic_id
from events.eventstore import EventStore, NewEvent
from events.messages import event_from_message
from events.outbox import OutboxEvent, OutboxWriter
from events.stores import CosmosInbox
from events.topology import Topology, load_topology

__all__ = ["Demo", "main"]

ROOT = Path(__file__).resolve().parent.parent
_STATUSES = ("placed", "paid", "shipped")


@dataclass
class Ledger:
    """What was written and what arrived; shared by the writer, consumers and the printer."""

    expected: set[str] = field(default_factory=set)
    final_status: dict[str, str] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    received_status: dict[str, str] = field(default_factory=dict)
    #: Sequences in arrival order per (destination, aggregate): Service Bus keeps order per
    #: session within one entity; events routed to different entities have no common order.
    order_by_aggregate: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, event_ids: list[str], order_id: str, status: str) -> None:
        with self.lock:
            self.expected.update(event_ids)
            self.final_status[order_id] = status

    def got(self, event: IntegrationEvent, destination: str) -> None:
        with self.lock:
            self.received.add(event.id)
            key = (destination, event.partitionkey)
            self.order_by_aggregate.setdefault(key, []).append(event.sequence or "")
            if event.type == "OrderUpserted":
                self.received_status[event.subject] = str(event.data.get("status"))

    def duplicate(self) -> None:
        with self.lock:
            self.duplicates += 1

    def missing(self) -> int:
        with self.lock:
            events = len(self.expected - self.received)
            states = sum(
                1
                for order, status in self.final_status.items()
                if self.received_status.get(order) != status
            )
            return events + states

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.expected), len(self.expected & self.received), self.duplicates


class Writer:
    """Places, pays and ships orders at a steady pace, like an application would."""

    def __init__(self, database: DatabaseProxy, ledger: Ledger, rate: float, seed: int) -> None:
        self._outbox = OutboxWriter(database.get_container_client("orders"))
        self._streams = EventStore(database.get_container_client("eventstore"))
        self._ledger = ledger
        self._interval = 1.0 / rate
        self._random = random.Random(seed)
        self._orders: dict[str, str] = {}
        self._next = 1

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            self.step()

    def step(self) -> None:
        open_orders = [o for o, s in self._orders.items() if s != "shipped"]
        if not open_orders or self._random.random() < 0.4:
            self._place()
        else:
            order_id = self._random.choice(open_orders)
            if self._orders[order_id] == "placed":
                self._pay(order_id)
            else:
                self._ship(order_id)

    def _entity(self, order_id: str, status: str, total: int) -> dict[str, object]:
        return {
            "id": order_id,
            "partitionKey": order_id,
            "type": "Order",
            "status": status,
            "customerId": f"customer-{self._random.randint(1, 9)}",
            "totalCents": total,
            "currency": "EUR",
            "customerEmail": "never-published@example.com",
        }

    def _place(self) -> None:
        order_id = f"order-{self._next}"
        self._next += 1
        total = self._random.randint(500, 50_000)
        placed = OrderPlacedV1(
            order_id=order_id,
            customer_id="customer-1",
            total_cents=total,
            currency="EUR",
            line_count=self._random.randint(1, 5),
        )
        ids = self._outbox.save(
            self._entity(order_id, "placed", total), [OutboxEvent(placed, subject=order_id)]
        )
        self._orders[order_id] = "placed"
        self._ledger.wrote(ids, order_id, "placed")

    def _pay(self, order_id: str) -> None:
        stream = f"payment-{order_id}"
        data = {"paymentId": stream, "orderId": order_id, "amountCents": 1000, "currency": "EUR"}
        version = self._streams.append(
            stream,
            0,
            [
                NewEvent("PaymentAuthorized", data),
                NewEvent("PaymentRiskScored", {"score": self._random.random()}),  # private
                NewEvent("PaymentCaptured", data),
            ],
        )
        public = [deterministic_id("eventstore", stream, str(v)) for v in (1, version)]
        self._outbox.save(self._entity(order_id, "paid", 1000), [])  # CDC only
        self._orders[order_id] = "paid"
        self._ledger.wrote(public, order_id, "paid")

    def _ship(self, order_id: str) -> None:
        shipped = OrderShippedV1(order_id=order_id, carrier="DHL", tracking_number=None)
        ids = self._outbox.save(
            self._entity(order_id, "shipped", 1000), [OutboxEvent(shipped, subject=order_id)]
        )
        self._orders[order_id] = "shipped"
        self._ledger.wrote(ids, order_id, "shipped")


class Consumer:
    """Receives session by session through the idempotent consumer helper."""

    def __init__(
        self, client: ServiceBusClient, inbox: CosmosInbox, ledger: Ledger, *, quiet: bool
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._ledger = ledger
        self._quiet = quiet

    def _show(self, event: IntegrationEvent, destination: str) -> None:
        self._ledger.got(event, destination)
        if not self._quiet:
            print(f"  received {event.type:<18} {event.subject:<22} seq={event.sequence}")

    def _receiver(self, destination: str) -> ServiceBusReceiver:
        if destination == "payments":
            return self._client.get_queue_receiver(
                destination, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
            )
        return self._client.get_subscription_receiver(
            destination, "all", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
        )

    def run(self, destination: str, stop: threading.Event) -> None:
        # One consumer identity (one inbox) whichever entity an event arrives on.
        helper = IdempotentConsumer(
            "demo-consumer", self._inbox, lambda event: self._show(event, destination)
        )
        while not stop.is_set():
            # Opened by the first receive, not by `with`: only then does max_wait_time bound
            # the wait for a session (the SDK's open on enter waits for the server's timeout).
            receiver = self._receiver(destination)
            try:
                while batch := receiver.receive_messages(max_message_count=50, max_wait_time=0.5):
                    for message in batch:
                        event = event_from_message(
                            b"".join(message.body),
                            message.application_properties or {},
                            message.content_type,
                        )
                        if helper.handle(event).duplicate:
                            self._ledger.duplicate()
                        receiver.complete_message(message)
            except OperationTimeoutError:
                continue  # no session has messages right now
            except ServiceBusError as exc:
                print(f"  consumer: {type(exc).__name__}, reconnecting", file=sys.stderr)
                stop.wait(0.5)
            finally:
                receiver.close()


class Relay:
    """The relay as a child process: ``python -m events run`` with the dev-stack settings."""

    #: Short leases so that a restarted relay takes over a killed one's feed within seconds.
    OPTIONS: tuple[str, ...] = (
        "--insecure-local",
        "--lease-duration",
        "6",
        "--renew-interval",
        "2",
        "--poll-interval",
        "0.3",
        "--acquire-interval",
        "1",
    )

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "events",
                "run",
                *self.OPTIONS,
                "--instance-id",
                f"relay-{self.starts}",
            ],
            cwd=ROOT,
            env={**os.environ, **self._env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def relay_environment(cosmos: LocalCosmos, bus: LocalServiceBus) -> dict[str, str]:
    return {
        names.COSMOS_CONNECTION: cosmos.connection_string,
        names.SERVICEBUS_CONNECTION: bus.connection_string,
    }


@contextlib.contextmanager
def local_stack(
    topology: Topology, data_dir: Path
) -> Iterator[tuple[LocalCosmos, LocalServiceBus]]:
    with (
        LocalCosmos(data_file=data_dir / "cosmos.json") as cosmos,
        LocalServiceBus(topology) as bus,
    ):
        provision_cosmos(cosmos.client(), topology)
        yield cosmos, bus


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
