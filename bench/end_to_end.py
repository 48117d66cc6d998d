"""Events/s end to end on the local stack: documents in Cosmos DB -> relay process -> consumer.

A relay round writes documents with the demo ``Writer`` (outbox events, CDC updates of the
order entities, event-sourced payment streams; real azure-cosmos SDK), then starts the relay
as a child process (``python -m events run``) and times until the demo ``Consumer`` (real
azure-servicebus SDK, session receivers, idempotent through the Cosmos DB inbox) has received
every event exactly once. A baseline round sends the events of the previous relay round again,
with fresh ids, straight to Service Bus with the SDK (``create_message_batch()``) and times
the same consumer code: what the local broker and consumer can do without the relay. Rounds
alternate; the median of each is printed with the ratio relay/baseline.

Relay rounds include the relay's start-up (interpreter, SDK imports, lease acquisition); the
``after first event`` figures leave it out (clock started at the first event received).

    python -m bench.end_to_end [--steps 140] [--rounds 2] [--seed 11]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from azure.cosmos import DatabaseProxy
from azure.servicebus import ServiceBusClient
from azure.servicebus.exceptions import MessageSizeExceededError

from devstack.cosmos import quiet_loopback_tls_warnings
from devstack.demo import Consumer, Ledger, Relay, Writer, local_stack, relay_environment
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.stores import CosmosInbox
from events.adapters.servicebus import to_sdk_message
from events.core.envelope import IntegrationEvent
from events.core.messages import OutgoingMessage, Router, to_message
from events.deployment.catalog import load_deployment
from events.deployment.topology import load_topology

_DRAIN_SECONDS = 90.0
_ENVELOPE_ROOM = 1024
_ORDERS_PER_ROUND = 100_000
#: Consumer threads per destination: sessions are taken one at a time per receiver.
_THREADS = {"integration-events": 16, "payments": 8}


@dataclass
class _TimedLedger(Ledger):
    """The demo ledger, plus the events themselves and when the first and last arrived."""

    events: list[IntegrationEvent] = field(default_factory=list)
    first: float | None = None
    last: float = 0.0

    def got(self, event: IntegrationEvent, destination: str) -> None:
        now = time.perf_counter()
        super().got(event, destination)
        with self.lock:
            self.events.append(event)
            self.first = now if self.first is None else self.first
            self.last = now


@dataclass(frozen=True)
class _Result:
    events: int
    seconds: float
    after_first: float
    duplicates: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def steady_rate(self) -> float:
        return self.events / self.after_first if self.after_first > 0 else float("nan")


@contextmanager
def _consuming(connection: str, inbox: CosmosInbox, ledger: Ledger) -> Iterator[None]:
    # One client (one AMQP connection) per receiving thread, as separate consumers would have.
    clients = [
        ServiceBusClient.from_connection_string(connection)
        for count in _THREADS.values()
        for _ in range(count)
    ]
    destinations = [d for d, count in _THREADS.items() for _ in range(count)]
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Consumer(client, inbox, ledger, quiet=True).run,
            args=(destination, stop),
            daemon=True,
        )
        for client, destination in zip(clients, destinations, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        for client in clients:
            client.close()


def _drain(ledger: _TimedLedger, started: float) -> _Result:
    deadline = time.monotonic() + _DRAIN_SECONDS
    while ledger.missing() and time.monotonic() < deadline:
        time.sleep(0.05)
    missing = ledger.missing()
    if missing:
        raise RuntimeError(f"{missing} events or final states never arrived")
    with ledger.lock:
        first = ledger.first if ledger.first is not None else started
        return _Result(
            events=len(ledger.received),
            seconds=ledger.last - started,
            after_first=ledger.last - first,
            duplicates=ledger.duplicates,
        )


def _relay_round(
    database: DatabaseProxy,
    connection: str,
    relay: Relay,
    steps: int,
    seed: int,
    first_order: int,
) -> tuple[_Result, list[IntegrationEvent]]:
    ledger = _TimedLedger()
    writer = Writer(database, ledger, rate=1.0, seed=seed)
    # Every Writer numbers its orders from 1; payment streams of a number already used would
    # conflict, so each round starts its own range.
    writer._next = first_order
    for _ in range(steps):
        writer.step()
    inbox = CosmosInbox(database.get_container_client("inbox"))
    with _consuming(connection, inbox, ledger):
        started = time.perf_counter()
        relay.start()
        try:
            result = _drain(ledger, started)
        finally:
            relay.stop()
    return result, list(ledger.events)


def _router() -> Router:
    declared = load_deployment().topology.service_bus
    return Router(default=declared.default_destination, routes=declared.routes)


def _send_batched(client: ServiceBusClient, messages: Sequence[OutgoingMessage]) -> None:
    by_destination: dict[str, list[OutgoingMessage]] = {}
    for message in messages:
        by_destination.setdefault(message.destination, []).append(message)
    for destination, group in by_destination.items():
        with client.get_topic_sender(destination) as sender:
            # Room for the batch envelope, which the SDK's size accounting leaves out (see
            # bench/publish_transfers.py): a batch filled to the limit can be refused.
            size = sender.create_message_batch().max_size_in_bytes - _ENVELOPE_ROOM
            batch = sender.create_message_batch(size)
            for message in group:
                sdk_message = to_sdk_message(message)
                try:
                    batch.add_message(sdk_message)
                except MessageSizeExceededError:
                    sender.send_messages(batch)
                    batch = sender.create_message_batch(size)
                    batch.add_message(sdk_message)
            if len(batch):
                sender.send_messages(batch)


def _baseline_round(
    database: DatabaseProxy,
    client: ServiceBusClient,
    connection: str,
    events: Sequence[IntegrationEvent],
) -> _Result:
    """The same events (fresh ids: the inbox and duplicate detection remember the old ones)."""
    router = _router()
    fresh = [e.model_copy(update={"id": str(uuid.uuid4())}) for e in events]
    messages = [to_message(event, router) for event in fresh]
    ledger = _TimedLedger()
    with ledger.lock:
        ledger.expected.update(e.id for e in fresh)
    inbox = CosmosInbox(database.get_container_client("inbox"))
    with _consuming(connection, inbox, ledger):
        started = time.perf_counter()
        _send_batched(client, messages)
        return _drain(ledger, started)


def _line(name: str, results: Sequence[_Result]) -> str:
    rate = statistics.median(r.rate for r in results)
    steady = statistics.median(r.steady_rate for r in results)
    return f"{name}={rate:.0f} events/s ({steady:.0f}/s after first event)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end")
    parser.add_argument("--steps", type=int, default=140, help="writer steps per relay round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv or [])
    quiet_loopback_tls_warnings()
    topology = load_topology()
    relays: list[_Result] = []
    baselines: list[_Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-e2e-") as data,
        local_stack(topology, Path(data)) as (cosmos, bus),
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
    ):
        database = cosmos.client().get_database_client(topology.cosmos.database)
        relay = Relay(relay_environment(cosmos, bus), Path(data) / "relay.log")
        # Warm-up of both paths: the relay process, the consumer's inbox, the broker's links.
        _, events = _relay_round(database, bus.connection_string, relay, 20, args.seed, 1)
        _baseline_round(database, client, bus.connection_string, events)
        for number in range(args.rounds):
            first_order = (number + 1) * _ORDERS_PER_ROUND
            result, events = _relay_round(
                database, bus.connection_string, relay, args.steps, args.seed + number, first_order
            )
            relays.append(result)
            # The same events, so the same sessions and sizes, straight from the SDK.
            baselines.append(_baseline_round(database, client, bus.connection_string, events))
            _print_round(number, result, baselines[-1], bus)
    ratio = statistics.median(r.rate / b.rate for r, b in zip(relays, baselines, strict=True))
    steady = statistics.median(
        r.steady_rate / b.steady_rate for r, b in zip(relays, baselines, strict=True)
    )
    print(
        f"end_to_end events={relays[-1].events} rounds={args.rounds} "
        f"{_line('relay', relays)} {_line('baseline', baselines)} "
        f"ratio relay/baseline={ratio:.2f} ({steady:.2f} after first event)"
    )


def _print_round(number: int, relay: _Result, baseline: _Result, bus: LocalServiceBus) -> None:
    print(
        f"  round {number}: relay {relay.events} events in {relay.seconds:.1f}s "
        f"(first after {relay.seconds - relay.after_first:.1f}s, duplicates "
        f"{relay.duplicates}); baseline {baseline.events} events in {baseline.seconds:.1f}s; "
        f"broker messages so far {sum(bus.stats.messages.values())}"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
