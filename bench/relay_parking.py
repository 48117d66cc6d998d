"""CPU per batch of the relay with the parked-aggregate check vs. without it, when nothing is
parked; and the Cosmos DB requests the check costs per batch.

The relay is ``Relay.process`` over orders-container batches of ``--batch`` change-feed
documents (outbox and CDC, as in bench/relay_cpu.py) with the real ``ServiceBusPublisher`` on
senders that build real SDK batches and drop them (no broker), and the real
``CosmosQuarantine`` on the local Cosmos DB server (real azure-cosmos SDK, loopback). One side
calls ``process(batch)`` (one query over the quarantine container per batch), the other
``process(batch, parked_check=False)``: the same relay without the check. The quarantine is
empty, so neither side writes. CPU is ``time.process_time()`` of this process (every thread:
the SDK's request building and response parsing count, the server's own CPU does not). Each
batch goes through both sides back to back, and rounds alternate which side goes first, so a
busier moment of the machine falls on both sides; the median of the per-round ratios is
printed (goal <= 1.05),
and the HTTP requests the SDK sent per batch on the checking side (goal 1), counted by its
transport. A second line does the same with the in-memory quarantine store: the relay's own
part of the check (collecting the batch's partition key values), without the request.

    python -m bench.relay_parking [--batches 40] [--batch 100] [--rounds 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from typing import Any

from azure.cosmos import PartitionKey

from bench.publish_transfers import ORDER_KINDS, change_feed_documents
from bench.relay_cpu import dropping_publisher
from devstack.cosmos import CountingTransport, LocalCosmos
from events.adapters.cosmos.stores import CosmosQuarantine
from events.core.messages import Router
from events.core.quarantine import InMemoryQuarantine, QuarantineStore
from events.core.relay import Feed, Relay
from events.deployment import settings
from events.deployment.catalog import load_deployment

FEED = "relay_orders"


def orders_relay(quarantine: QuarantineStore) -> Relay:
    deployment = load_deployment()
    declared = deployment.topology.service_bus
    definition = deployment.feed(FEED)
    prefix = settings.setting_defaults(deployment.topology)[settings.EVENT_SOURCE]
    feed = Feed(
        name=definition.function_name,
        container=definition.container,
        partition_key_path=definition.partition_key_path,
        sources=definition.sources,
        source_uri=f"{prefix}/relay/{definition.container}",
        contracts=deployment.contracts,
    )
    router = Router(default=declared.default_destination, routes=declared.routes)
    return Relay(feed, dropping_publisher(), quarantine, router)


def batches_of(count: int, size: int, seed: int) -> list[list[dict[str, Any]]]:
    [documents] = change_feed_documents(count * size, 0, seed, "parking", ORDER_KINDS).values()
    return [documents[i : i + size] for i in range(0, len(documents), size)]


def relay_cpu(
    relay: Relay, batches: list[list[dict[str, Any]]], *, first: bool
) -> tuple[float, float]:
    """CPU seconds to relay every batch with the check and without it, paired: each batch
    goes through both sides back to back (``first``: the checking side goes first, else
    second), so drift of the machine and the CPU caches the previous batch left fall on both
    sides alike."""
    gc.collect()
    checked = without = 0.0
    for batch in batches:
        for check in (True, False) if first else (False, True):
            started = time.process_time()
            outcome = relay.process(batch, parked_check=check)
            spent = time.process_time() - started
            assert outcome.quarantined == 0, "nothing may be parked in this bench"
            if check:
                checked += spent
            else:
                without += spent
    return checked, without


def compare(
    relay: Relay, batches: list[list[dict[str, Any]]], rounds: int, transport: CountingTransport
) -> tuple[float, float, float, float]:
    """Median (with, without) ms per batch, median ratio, and most requests per batch."""
    relay_cpu(relay, batches[:3], first=True)  # warm-up: imports, sender, container cache
    ratios: list[float] = []
    with_ms: list[float] = []
    without_ms: list[float] = []
    requests: list[float] = []
    for number in range(rounds):
        before = transport.requests
        checked, without = relay_cpu(relay, batches, first=number % 2 == 0)
        requests.append((transport.requests - before) / len(batches))
        ratios.append(checked / without)
        with_ms.append(checked / len(batches) * 1e3)
        without_ms.append(without / len(batches) * 1e3)
        print(
            f"  round {number}: with check {with_ms[-1]:.2f} ms/batch, without "
            f"{without_ms[-1]:.2f} ms/batch, ratio {ratios[-1]:.3f}, "
            f"Cosmos DB requests/batch {requests[-1]:.2f}"
        )
    return (
        statistics.median(with_ms),
        statistics.median(without_ms),
        statistics.median(ratios),
        max(requests),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_parking")
    parser.add_argument("--batches", type=int, default=40, help="batches per side and round")
    parser.add_argument("--batch", type=int, default=100, help="documents per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv or [])
    batches = batches_of(args.batches, args.batch, args.seed)
    with LocalCosmos() as server:
        transport = CountingTransport()
        client = server.client(transport)
        database = client.create_database(id=f"bench-{uuid.uuid4().hex[:8]}")
        container = database.create_container(
            id="quarantine", partition_key=PartitionKey(path="/partitionKey")
        )
        cosmos = compare(orders_relay(CosmosQuarantine(container)), batches, args.rounds, transport)
    memory = compare(orders_relay(InMemoryQuarantine()), batches, args.rounds, CountingTransport())
    common = f"batches={len(batches)} documents/batch={args.batch} rounds={args.rounds}"
    print(
        f"relay_parking {common} with check={cosmos[0]:.2f} ms/batch "
        f"without={cosmos[1]:.2f} ms/batch ratio with/without={cosmos[2]:.3f} (goal <= 1.05) "
        f"Cosmos DB requests/batch={cosmos[3]:.2f} (goal 1)"
    )
    print(
        f"relay_parking in-memory store {common} with check={memory[0]:.2f} ms/batch "
        f"without={memory[1]:.2f} ms/batch ratio with/without={memory[2]:.3f}"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
