"""Change-feed items/s through ChangeFeedProcessor (no-op handler) vs. a raw SDK pull loop.

Both read the same container of the local Cosmos DB server in this process, with the same
page size. The ratio processor/raw shows the processor's own cost; the goal is >= 0.9.
Two runs: a checkpoint (one lease write) after every page, which on the local server costs
about as much as the page read, and ``checkpoint_interval=1`` (lease written at most once a
second; a crash replays up to a second of handled pages).

    python -m bench.changefeed_throughput [--docs 5000] [--page 100]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from azure.cosmos import ContainerProxy, PartitionKey

from devstack.cosmos import LocalCosmos, quiet_loopback_tls_warnings
from events.changefeed import ChangeFeedProcessor
from events.changefeed.cosmos import CosmosChangeFeed, CosmosLeaseStore


def _raw(container: ContainerProxy, page_size: int, total: int) -> float:
    started = time.perf_counter()
    seen = 0
    feed_range = next(iter(container.read_feed_ranges()))
    pages = container.query_items_change_feed(
        feed_range=feed_range, start_time="Beginning", max_item_count=page_size
    ).by_page()
    for page in pages:
        seen += len(list(page))
        if seen >= total:
            break
    elapsed = time.perf_counter() - started
    assert seen == total, f"raw loop saw {seen} of {total}"
    return seen / elapsed


def _processor(
    container: ContainerProxy,
    leases: ContainerProxy,
    page: int,
    total: int,
    name: str,
    checkpoint_interval: float,
) -> float:
    seen = 0

    def handler(documents: list[dict[str, Any]]) -> None:
        nonlocal seen
        seen += len(documents)

    processor = ChangeFeedProcessor(
        CosmosChangeFeed(container),
        CosmosLeaseStore(leases),
        handler,
        name=name,
        instance_id="bench",
        max_items=page,
        checkpoint_interval=checkpoint_interval,
    )
    started = time.perf_counter()
    for _ in range(total // page + 10):
        if processor.run_once() == 0 or seen >= total:
            break
    elapsed = time.perf_counter() - started
    processor.release_all()
    assert seen == total, f"processor saw {seen} of {total}"
    return seen / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.changefeed_throughput")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--page", type=int, default=100)
    args = parser.parse_args(argv or [])
    quiet_loopback_tls_warnings()
    with LocalCosmos() as server:
        database = server.client().create_database("bench")
        container = database.create_container("orders", partition_key=PartitionKey(path="/pk"))
        leases = database.create_container("leases", partition_key=PartitionKey(path="/id"))
        for i in range(args.docs):
            container.upsert_item({"id": f"o{i}", "pk": f"c{i % 50}", "n": i})
        _raw(container, args.page, args.docs)  # warm-up: connections, routing map
        raw = _raw(container, args.page, args.docs)
        strict = _processor(container, leases, args.page, args.docs, "strict.", 0.0)
        batched = _processor(container, leases, args.page, args.docs, "batched.", 1.0)
    print(
        f"changefeed_throughput docs={args.docs} page={args.page} raw={raw:.0f}/s "
        f"processor(checkpoint every page)={strict:.0f}/s ratio={strict / raw:.2f}; "
        f"processor(checkpoint_interval=1s)={batched:.0f}/s ratio={batched / raw:.2f} "
        "(goal >= 0.9)"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
