"""Change-feed items/s through ChangeFeedProcessor (no-op handler) vs. a raw SDK pull loop.

Both read the same documents of one container of the local Cosmos DB server in this process,
with the same page size. The ratio processor/raw shows the processor's cost with its lease
writes; processor/reference (the reference loop below) its own cost beyond what one lease
write per page costs by itself, goal >= 0.95 with the default settings (a checkpoint, i.e. one
lease write, after every page). The
processor runs as in production (``run`` until stopped); ``checkpoint_interval=1`` (lease
written at most once a second) is measured too, for comparison.

The process takes the relay host's interpreter settings first (``tune_interpreter``: the
thread switch interval of ``python -m events run``), for every loop alike.

Fairness: one warm-up pass of each loop (connections, routing map, lease container), then
``--rounds`` rounds alternating which loop goes first, each processor round with fresh leases
(its own name prefix). Two rates per loop and round:
- steady: documents after the first page / time from the first page received to the last
  page handled. Each processor page in that window pays one read and one checkpoint write
  (the write of the page before), so this is the per-page cost;
- end-to-end: all documents / time from the start (for the processor: lease creation and
  acquisition) to the last page handled.
The medians of the per-round ratios are printed.

Each measurement runs twice by default: against the server as it is on loopback (latency 0:
every cost is this process's CPU), and with every response held 5 ms (``--latency``), a
simulated network round trip to a Cosmos DB region, where a client mostly waits. A third
loop is the reference for what a checkpoint after every page costs by itself: the raw loop
plus one etag-guarded lease write per page, overlapped with the next read, no processor.

    python -m bench.changefeed_throughput [--docs 5000] [--page 100] [--rounds 5]
        [--latency MS ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from azure.cosmos import ContainerProxy, PartitionKey

from devstack.cosmos import LocalCosmos, quiet_loopback_tls_warnings
from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore
from events.changefeed import ChangeFeedProcessor
from events.changefeed.feed import FeedRange
from events.changefeed.leases import Lease
from events.hosts.processor import tune_interpreter

_RUN_TIMEOUT = 120.0
_LOADERS = 8


@dataclass(frozen=True)
class _Rates:
    steady: float
    end_to_end: float


class _Timeline:
    """When reading started, when the first page arrived and when the last one was handled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = 0
        self.first_page = 0
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None

    def page(self, size: int) -> bool:
        """Count a page; True once every document was seen."""
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_page = now, size
        self.seen += size
        if self.seen >= self.total and self.last is None:
            self.last = now
        return self.seen >= self.total

    def rates(self, what: str) -> _Rates:
        assert self.seen == self.total, f"{what} saw {self.seen} of {self.total}"
        assert self.first is not None
        assert self.last is not None
        return _Rates(
            steady=(self.total - self.first_page) / (self.last - self.first),
            end_to_end=self.total / (self.last - self.started),
        )


def _raw(container: ContainerProxy, page_size: int, total: int) -> _Rates:
    timeline = _Timeline(total)
    feed_range = next(iter(container.read_feed_ranges()))
    pages = container.query_items_change_feed(
        feed_range=feed_range, start_time="Beginning", max_item_count=page_size
    ).by_page()
    for page in pages:
        if timeline.page(len(list(page))):
            break
    return timeline.rates("raw loop")


def _processor(
    container: ContainerProxy,
    leases: ContainerProxy,
    page: int,
    total: int,
    name: str,
    checkpoint_interval: float,
) -> _Rates:
    stop = threading.Event()
    timeline: _Timeline | None = None

    def handler(documents: list[dict[str, Any]]) -> None:
        assert timeline is not None
        if timeline.page(len(documents)):
            stop.set()

    processor = ChangeFeedProcessor(
        CosmosChangeFeed(container),
        CosmosLeaseStore(leases),
        handler,
        name=name,
        instance_id="bench",
        max_items=page,
        checkpoint_interval=checkpoint_interval,
    )
    worker = threading.Thread(target=processor.run, args=(stop,), name=f"bench-{name}")
    timeline = _Timeline(total)
    worker.start()
    worker.join(_RUN_TIMEOUT)
    assert not worker.is_alive(), f"processor {name} did not finish"
    return timeline.rates(f"processor {name}")


def _raw_with_writes(
    container: ContainerProxy, leases: ContainerProxy, page_size: int, total: int, name: str
) -> _Rates:
    """The raw loop plus one lease write per page, each overlapped with the next read (on a
    thread, joined before the next write): the least per-page checkpointing can cost with
    this SDK, without any processor logic."""
    store = CosmosLeaseStore(leases)
    lease = store.create(
        Lease(
            id=f"{name}00-FF",
            processor=name,
            feed_range=FeedRange(min="", max="FF"),
            start_from="beginning",
            timestamp=datetime.now(UTC),
        )
    )
    timeline = _Timeline(total)
    feed_range = next(iter(container.read_feed_ranges()))
    pages = container.query_items_change_feed(
        feed_range=feed_range, start_time="Beginning", max_item_count=page_size
    ).by_page()
    with ThreadPoolExecutor(1) as writer:
        pending: Future[Lease] | None = None
        for page in pages:
            done = timeline.page(len(list(page)))
            if pending is not None:
                lease = pending.result()
            pending = writer.submit(store.replace, replace(lease, continuation=str(timeline.seen)))
            if done:
                break
        if pending is not None:
            pending.result()
    return timeline.rates("raw loop with lease writes")


def _measure(args: argparse.Namespace, latency_ms: float) -> str:
    raw: list[_Rates] = []
    bare: list[_Rates] = []
    strict: list[_Rates] = []
    batched: list[_Rates] = []
    with LocalCosmos(latency=latency_ms / 1000) as server:
        database = server.client().create_database("bench")
        container = database.create_container("orders", partition_key=PartitionKey(path="/pk"))
        leases = database.create_container("leases", partition_key=PartitionKey(path="/id"))
        documents = ({"id": f"o{i}", "pk": f"c{i % 50}", "n": i} for i in range(args.docs))
        with ThreadPoolExecutor(_LOADERS) as loaders:
            for _ in loaders.map(container.upsert_item, documents):
                pass
        _raw(container, args.page, args.docs)  # warm-up of both loops
        _processor(container, leases, args.page, args.docs, "warmup.", 0.0)
        _raw_with_writes(container, leases, args.page, args.docs, "warmup-bare.")
        for n in range(args.rounds):
            if n % 2 == 0:
                raw.append(_raw(container, args.page, args.docs))
            # The reference loop and the processor take turns going first, as the raw loop does.
            if n % 2 == 0:
                bare.append(_raw_with_writes(container, leases, args.page, args.docs, f"w{n}."))
            strict.append(_processor(container, leases, args.page, args.docs, f"s{n}.", 0.0))
            if n % 2 == 1:
                bare.append(_raw_with_writes(container, leases, args.page, args.docs, f"w{n}."))
            batched.append(_processor(container, leases, args.page, args.docs, f"b{n}.", 1.0))
            if n % 2 == 1:
                raw.append(_raw(container, args.page, args.docs))

    def ratio(runs: list[_Rates], steady: bool) -> float:
        return statistics.median(
            (run.steady / base.steady) if steady else (run.end_to_end / base.end_to_end)
            for run, base in zip(runs, raw, strict=True)
        )

    def against_reference(steady: bool) -> float:
        return statistics.median(
            (run.steady / ref.steady) if steady else (run.end_to_end / ref.end_to_end)
            for run, ref in zip(strict, bare, strict=True)
        )

    raw_page_ms = 1000 * args.page / statistics.median(r.steady for r in raw)
    return (
        f"changefeed_throughput latency={latency_ms:g}ms docs={args.docs} page={args.page} "
        f"rounds={args.rounds} raw={raw_page_ms:.1f}ms/page; "
        f"checkpoint every page: processor/reference steady={against_reference(True):.2f} "
        f"end-to-end={against_reference(False):.2f} (goal >= 0.95), "
        f"processor/raw steady={ratio(strict, True):.2f} "
        f"end-to-end={ratio(strict, False):.2f} "
        f"(reference = raw loop + a lease write per page, no processor; reference/raw "
        f"{ratio(bare, True):.2f}); "
        f"checkpoint_interval=1s: processor/raw steady={ratio(batched, True):.2f} "
        f"end-to-end={ratio(batched, False):.2f} (median of per-round ratios)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.changefeed_throughput")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        metavar="MS",
        help="simulated round trip of the server, repeatable (default: 0 and 5)",
    )
    args = parser.parse_args(argv or [])
    quiet_loopback_tls_warnings()
    # As in a relay process (python -m events run): every loop runs with the host's settings.
    previous = sys.getswitchinterval()
    tune_interpreter()
    try:
        for latency_ms in args.latency or [0.0, 5.0]:
            print(_measure(args, latency_ms), flush=True)
    finally:
        sys.setswitchinterval(previous)


if __name__ == "__main__":
    main(sys.argv[1:])
