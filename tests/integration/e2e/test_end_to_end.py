"""Documents written with the real azure-cosmos SDK arrive as integration events at a consumer
on the real azure-servicebus SDK, through the relay process: in order per aggregate, exactly
once after dedup, also when the broker drops connections and the relay is killed (SIGKILL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.servicebus import ServiceBusClient

from devstack.cosmos import LocalCosmos
from devstack.demo import Consumer, Ledger, Relay, Writer, local_stack, relay_environment
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.stores import CosmosInbox
from events.deployment.topology import load_topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRAIN_SECONDS = 120


@dataclass
class Stack:
    cosmos: LocalCosmos
    bus: LocalServiceBus
    relay: Relay
    writer: Writer
    ledger: Ledger


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    topology = load_topology()
    with local_stack(topology, tmp_path) as (cosmos, bus):
        relay = Relay(relay_environment(cosmos, bus), tmp_path / "relay.log")
        database = cosmos.client().get_database_client(topology.cosmos.database)
        ledger = Ledger()
        writer = Writer(database, ledger, rate=1.0, seed=11)
        inbox = CosmosInbox(database.get_container_client("inbox"))
        stop = threading.Event()
        with ServiceBusClient.from_connection_string(bus.connection_string) as client:
            consumer = Consumer(client, inbox, ledger, quiet=True)
            threads = [
                threading.Thread(target=consumer.run, args=(d, stop), daemon=True)
                for d in ("integration-events", "integration-events", "payments")
            ]
            for thread in threads:
                thread.start()
            try:
                yield Stack(cosmos, bus, relay, writer, ledger)
            finally:
                stop.set()
                relay.stop()
                for thread in threads:
                    thread.join(timeout=10)


def _wait_for_delivery(ledger: Ledger) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while ledger.missing() and time.monotonic() < deadline:
        time.sleep(0.5)


def _assert_exactly_once_in_order(ledger: Ledger) -> None:
    assert ledger.missing() == 0, "events or final CDC states never arrived"
    written, received, _ = ledger.counts()
    assert received == written
    for aggregate, sequences in ledger.order_by_aggregate.items():
        # Non-decreasing: changes written in one transactional batch share their _lsn.
        assert sequences == sorted(sequences), f"out of order for {aggregate}"
    assert ledger.handled == len(ledger.received), "an event id was handled twice"


def test_end_to_end_documents_arrive_once_and_in_order_per_aggregate(stack: Stack) -> None:
    stack.relay.start()
    for _ in range(60):
        stack.writer.step()

    _wait_for_delivery(stack.ledger)

    _assert_exactly_once_in_order(stack.ledger)
    assert stack.ledger.duplicates == 0
    published = sum(stack.bus.stats.messages.values())
    assert published >= stack.ledger.counts()[0]


def test_end_to_end_broker_drops_and_relay_sigkill_lose_and_duplicate_nothing(
    stack: Stack,
) -> None:
    stack.relay.start()
    for round_number in range(3):
        stack.bus.faults.drop_connection_after(1)  # mid-batch: the 2nd transfer kills the link
        for _ in range(20):
            stack.writer.step()
        time.sleep(1.5)  # let the relay pick part of it up
        stack.relay.kill()  # SIGKILL: no lease release, no checkpoint of the in-flight batch
        for _ in range(10):
            stack.writer.step()
        stack.relay.start()
        assert stack.relay.starts == round_number + 2

    _wait_for_delivery(stack.ledger)

    _assert_exactly_once_in_order(stack.ledger)
    assert stack.bus.stats.dropped_connections >= 1
