"""Client CPU of one Cosmos DB request: the app's transport against azure-core's requests
transport, on the local Cosmos DB server (real azure-cosmos SDK, loopback, HTTPS).

Two clients of the same server in one process, identical but for their transport:
``CosmosTransport`` (requests without a proxy straight to urllib3's pools, docs/decisions.md
29) and azure-core's ``RequestsTransport`` with the environment off (decision 28 without 29:
what the app used before). Three requests the relay and the consumers send all the time: a
point read, the parked-aggregate check (one query with 100 partition key values, as for a
batch of 100 documents) and an upsert. CPU is ``time.process_time()`` of this process; rounds
alternate which transport goes first; medians of the per-round means are printed, with the
ratio app/requests for each request.

    python -m bench.cosmos_requests [--requests 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from devstack.cosmos import LocalCosmos, quiet_loopback_tls_warnings
from events.adapters.cosmos.stores import CosmosQuarantine
from events.adapters.cosmos.transport import CosmosTransport

_KEYS = 100


def requests_of(container: ContainerProxy) -> dict[str, Callable[[], object]]:
    """The three requests, on ``container``."""
    container.upsert_item({"id": "read-me", "partitionKey": "order-1", "status": "placed"})
    quarantine = CosmosQuarantine(container)
    keys = [f"order-{uuid.uuid4()}" for _ in range(_KEYS)]
    return {
        "point read": lambda: container.read_item("read-me", partition_key="order-1"),
        "parked check": lambda: quarantine.parked("relay_orders", keys),
        "upsert": lambda: container.upsert_item(
            {"id": "written", "partitionKey": "order-2", "status": "shipped"}
        ),
    }


def cpu_ms(request: Callable[[], object], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        request()
    return (time.process_time() - started) / count * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cosmos_requests")
    parser.add_argument("--requests", type=int, default=200, help="requests per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv or [])
    quiet_loopback_tls_warnings()
    with LocalCosmos() as server:
        sides: dict[str, dict[str, Callable[[], object]]] = {}
        for name, transport in (
            ("app", CosmosTransport()),
            ("requests", RequestsTransport(use_env_settings=False)),
        ):
            client = CosmosClient(
                server.endpoint, credential=server.key, connection_verify=False, transport=transport
            )
            database = client.create_database(id=f"bench-{uuid.uuid4().hex[:8]}")
            container = database.create_container(
                id="requests", partition_key=PartitionKey(path="/partitionKey")
            )
            sides[name] = requests_of(container)
        for side in sides.values():  # warm-up: connections, caches, imports
            for request in side.values():
                cpu_ms(request, 20)
        spent: dict[tuple[str, str], list[float]] = {}
        for number in range(args.rounds):
            order = list(sides) if number % 2 == 0 else list(sides)[::-1]
            for kind in sides["app"]:
                for name in order:
                    spent.setdefault((kind, name), []).append(
                        cpu_ms(sides[name][kind], args.requests)
                    )
    for kind in sides["app"]:
        app = statistics.median(spent[(kind, "app")])
        baseline = statistics.median(spent[(kind, "requests")])
        ratios = [
            a / r for a, r in zip(spent[(kind, "app")], spent[(kind, "requests")], strict=True)
        ]
        print(
            f"cosmos_requests {kind}: app transport {app:.3f} ms, requests transport "
            f"{baseline:.3f} ms of client CPU per request; app/requests "
            f"{statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
