"""CPU and Cosmos DB requests per event of a consumer: transactional inbox vs idempotent
consumer vs no inbox, on the local Cosmos DB server.

Every side handles ``--events`` fresh integration events whose effect is one document
upserted into the consumer's container (real azure-cosmos SDK, loopback):

- ``none``: the handler alone (``container.upsert_item``), no inbox: one request per event;
- ``idempotent``: ``IdempotentConsumer`` on ``CosmosInbox`` (record read, claim create,
  handler's upsert, done-mark replace): four requests;
- ``transactional``: ``TransactionalConsumer`` on ``CosmosTransactionalInbox`` (record read,
  one batch with the record and the handler's upsert): two requests.

With ``--ordered`` both inbox sides also keep the stream position (the idempotent side reads
and writes it, the transactional side reads it and writes it in its batch). CPU is
``time.process_time()`` of this process (the SDK's request building and response parsing; the
server's CPU does not count). Rounds rotate which side goes first; the medians of the
per-round ratios to ``none`` are printed, with requests per event counted by the transport.

    python -m bench.consumer_inbox [--events 200] [--rounds 5] [--ordered]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from azure.cosmos import ContainerProxy, PartitionKey

from devstack.cosmos import CountingTransport, LocalCosmos
from events.adapters.cosmos.inbox import CosmosTransactionalInbox
from events.adapters.cosmos.stores import CosmosInbox
from events.core.consumer import IdempotentConsumer
from events.core.envelope import IntegrationEvent, sequence_of
from events.core.inbox import TransactionalConsumer, UnitOfWork
from events.core.ordering import OrderPolicy

SIDES = ("none", "idempotent", "transactional")
STREAMS = 20


def events_of(count: int, tag: str) -> list[IntegrationEvent]:
    now = datetime.now(UTC)
    return [
        IntegrationEvent(
            id=f"{tag}-{i}",
            source="/bench/orders",
            type="OrderPlaced",
            subject=f"order-{i % STREAMS}",
            time=now,
            data={"orderId": f"order-{i % STREAMS}", "totalCents": i},
            partitionkey=f"order-{i % STREAMS}",
            sequence=sequence_of(i),
        )
        for i in range(count)
    ]


def _effect(event: IntegrationEvent) -> dict[str, object]:
    return {
        "id": f"effect-{event.id}",
        "partitionKey": event.partitionkey,
        "total": event.data["totalCents"],
    }


def handlers(
    ledger: ContainerProxy, inbox: ContainerProxy, ordered: bool
) -> dict[str, Callable[[IntegrationEvent], object]]:
    policy = OrderPolicy() if ordered else None

    def direct(event: IntegrationEvent) -> None:
        ledger.upsert_item(_effect(event))

    def unit_of_work(event: IntegrationEvent, unit: UnitOfWork) -> None:
        unit.upsert(_effect(event))

    idempotent = IdempotentConsumer("bench", CosmosInbox(inbox), direct, ordering=policy)
    transactional = TransactionalConsumer(
        "bench", CosmosTransactionalInbox(ledger), unit_of_work, ordering=policy
    )
    return {"none": direct, "idempotent": idempotent.handle, "transactional": transactional.handle}


def cpu_of(handle: Callable[[IntegrationEvent], object], events: list[IntegrationEvent]) -> float:
    gc.collect()
    started = time.process_time()
    for event in events:
        handle(event)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_inbox")
    parser.add_argument("--events", type=int, default=200, help="events per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ordered", action="store_true", help="keep stream positions too")
    args = parser.parse_args(argv or [])
    with LocalCosmos() as server:
        transport = CountingTransport()
        database = server.client(transport).create_database(id=f"bench-{uuid.uuid4().hex[:8]}")
        ledger = database.create_container(
            id="ledger", partition_key=PartitionKey(path="/partitionKey"), default_ttl=-1
        )
        inbox = database.create_container(
            id="inbox", partition_key=PartitionKey(path="/consumer"), default_ttl=1_209_600
        )
        sides = handlers(ledger, inbox, args.ordered)
        for name, handle in sides.items():  # warm-up: imports, container caches
            cpu_of(handle, events_of(5, f"warm-{name}"))
        ms: dict[str, list[float]] = {name: [] for name in SIDES}
        requests: dict[str, list[float]] = {name: [] for name in SIDES}
        ratios: dict[str, list[float]] = {name: [] for name in SIDES[1:]}
        for number in range(args.rounds):
            order = SIDES[number % 3 :] + SIDES[: number % 3]
            spent: dict[str, float] = {}
            for name in order:
                before = transport.requests
                spent[name] = cpu_of(sides[name], events_of(args.events, f"r{number}-{name}"))
                requests[name].append((transport.requests - before) / args.events)
                ms[name].append(spent[name] / args.events * 1e3)
            for name in SIDES[1:]:
                ratios[name].append(spent[name] / spent["none"])
            print(
                f"  round {number}: "
                + " ".join(f"{name}={ms[name][-1]:.3f} ms/event" for name in SIDES)
            )
    median = {name: statistics.median(values) for name, values in ms.items()}
    print(
        f"consumer_inbox events={args.events} rounds={args.rounds} ordered={args.ordered} "
        + " ".join(
            f"{name}={median[name]:.3f} ms/event ({max(requests[name]):.0f} requests/event)"
            for name in SIDES
        )
        + " ratio idempotent/none="
        + f"{statistics.median(ratios['idempotent']):.2f}"
        + " transactional/none="
        + f"{statistics.median(ratios['transactional']):.2f}"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
