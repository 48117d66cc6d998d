"""Scale-out: events/s of 1, 2 and 4 relay processes sharing one container's feed ranges.

The local Cosmos DB server gives every new container ``--ranges`` physical partitions (feed
ranges; 4 by default), so the relay's processor has that many leases to share. Per round and
instance count k:

1. a fresh monitored container (``RELAY_ORDERS_CONTAINER`` points the relay at it) and no
   lease of the orders feed yet;
2. k ``python -m events run`` child processes (distinct ``--instance-id``), started while the
   container is empty; the bench waits until the leases are balanced (each instance owns
   ranges/k of them), as they are in a deployment that has been running;
3. every child is paused (SIGSTOP), ``--docs`` outbox documents are written (spread over the
   feed ranges by their partition key values), every child resumes (SIGCONT) and the clock
   starts;
4. the clock stops when the local broker has accepted every event.

So start-up, lease balancing and the writing of the documents are outside the measure: it is
the rate of k processes that already hold their share of the feed. Printed per k: events/s and
the children's CPU per event (``/proc/<pid>/stat``), per round the cores the relay processes
used and how busy the whole machine was (``/proc/stat``: every process, the local servers
and anything else running), then the medians of the per-round ratios
2/1 and 4/1 (goal: 2/1 >= 1.7 where the feed ranges allow). Rounds alternate the order of k.
Once on loopback, once with every response of the Cosmos DB server held ``--latency`` ms (a
simulated round trip to a region; the broker stays on loopback).

    python -m bench.scaleout_throughput [--docs 4000] [--rounds 2] [--ranges 4]
        [--instances 1 2 4] [--latency MS ...] [--seed 11]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from azure.cosmos import DatabaseProxy, PartitionKey

from bench.publish_transfers import change_feed_documents
from devstack.cosmos import LocalCosmos, quiet_loopback_tls_warnings
from devstack.demo import relay_environment
from devstack.provision import provision_cosmos
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.changefeed import CosmosLeaseStore
from events.deployment.topology import Topology, load_topology

_FEED = "relay_orders"
_OUTBOX_KINDS = ("placed", "shipped")
_LOADERS = 8
_BALANCE_TIMEOUT = 90.0
_RUN_TIMEOUT = 300.0
#: Lines of each relay's output shown when a round fails.
_LOG_TAIL = 40
_POLL = 0.01
_TICK = os.sysconf("SC_CLK_TCK")
_ROOT = Path(__file__).resolve().parent.parent
#: Leases long enough to outlast the pause while the documents are written.
_OPTIONS = (
    "--insecure-local",
    "--start-from",
    "beginning",
    "--lease-duration",
    "60",
    "--renew-interval",
    "10",
    "--acquire-interval",
    "1",
    "--poll-interval",
    "0.1",
)


@dataclass(frozen=True)
class _Run:
    instances: int
    events: int
    seconds: float
    cpu: float
    #: Share of the machine's CPU time (all cores, every process) busy during the run.
    machine_busy: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_event(self) -> float:
        return self.cpu / self.events


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_times() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _accepted(bus: LocalServiceBus) -> int:
    return sum(bus.stats.messages.values())


def _documents(count: int, seed: int, tag: str) -> list[dict[str, Any]]:
    [documents] = change_feed_documents(count, 0, seed, tag, _OUTBOX_KINDS).values()
    return [
        {k: v for k, v in d.items() if k not in ("_rid", "_etag", "_ts", "_lsn")} for d in documents
    ]


def _lease_prefix(topology: Topology) -> str:
    [feed] = [c.feed for c in topology.cosmos.containers if c.feed and c.feed.function == _FEED]
    return feed.lease_prefix


def _wait_balanced(
    leases: CosmosLeaseStore, prefix: str, ids: list[str], ranges: int, children: list[Any]
) -> None:
    deadline = time.monotonic() + _BALANCE_TIMEOUT
    while time.monotonic() < deadline:
        owners = Counter(lease.owner for lease in leases.list(prefix))
        if sum(owners.values()) == ranges and all(owners[i] == ranges // len(ids) for i in ids):
            return
        if any(child.poll() is not None for child in children):
            raise RuntimeError("a relay process exited before the leases were balanced")
        time.sleep(0.2)
    raise RuntimeError(f"leases of {prefix} not balanced within {_BALANCE_TIMEOUT:g} s")


def _round(
    database: DatabaseProxy,
    bus: LocalServiceBus,
    env: dict[str, str],
    topology: Topology,
    args: argparse.Namespace,
    instances: int,
    tag: str,
) -> _Run:
    prefix = _lease_prefix(topology)
    container = f"orders-{tag}"
    database.create_container(container, PartitionKey("/partitionKey"))
    monitored = database.get_container_client(container)
    [leases_spec] = topology.cosmos.by_role("leases")
    leases = CosmosLeaseStore(database.get_container_client(leases_spec.name))
    for lease in leases.list(prefix):
        leases.delete(lease)
    documents = _documents(args.docs, args.seed, tag)
    ids = [f"scale-{tag}-{i}" for i in range(instances)]
    child_env = {**os.environ, **env, "RELAY_ORDERS_CONTAINER": container}
    logs: list[IO[bytes]] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        for instance_id in ids:
            logs.append(tempfile.TemporaryFile())  # noqa: SIM115 - closed in finally
            command = [sys.executable, "-m", "events", "run", *_OPTIONS]
            children.append(
                subprocess.Popen(
                    [*command, "--instance-id", instance_id],
                    cwd=_ROOT,
                    env=child_env,
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                )
            )
        _wait_balanced(leases, prefix, ids, args.ranges, children)
        for child in children:
            child.send_signal(signal.SIGSTOP)
        # Counted from before the writes: whatever this round's documents become is counted,
        # even if a relay published some of them before it was paused (then said below).
        before = _accepted(bus)
        with ThreadPoolExecutor(_LOADERS) as loaders:
            for _ in loaders.map(monitored.upsert_item, documents):
                pass
        early = _accepted(bus) - before
        if early:
            print(f"  note: {early} events were published while the relays were paused")
        cpu_before = sum(_cpu_seconds(child.pid) for child in children)
        busy_before, total_before = _machine_times()
        started = time.perf_counter()
        for child in children:
            child.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + _RUN_TIMEOUT
        while _accepted(bus) - before < len(documents):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{_accepted(bus) - before} of {len(documents)} events after {_RUN_TIMEOUT:g} s"
                )
            time.sleep(_POLL)
        seconds = time.perf_counter() - started
        cpu = sum(_cpu_seconds(child.pid) for child in children) - cpu_before
        busy, total = _machine_times()
        busy_share = (busy - busy_before) / max(1, total - total_before)
        return _Run(instances, len(documents), seconds, cpu, busy_share)
    except RuntimeError:
        for instance_id, log in zip(ids, logs, strict=True):
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-_LOG_TAIL:]
            print(f"--- last lines of {instance_id}:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        for child in children:
            child.send_signal(signal.SIGCONT)
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
        for log in logs:
            log.close()


def _measure(args: argparse.Namespace, latency_ms: float, topology: Topology) -> str:
    runs: dict[int, list[_Run]] = {k: [] for k in args.instances}
    with (
        LocalCosmos(latency=latency_ms / 1000, partitions=args.ranges) as cosmos,
        LocalServiceBus(topology) as bus,
    ):
        provision_cosmos(cosmos.client(), topology)
        database = cosmos.client().get_database_client(topology.cosmos.database)
        env = relay_environment(cosmos, bus)
        for number in range(args.rounds):
            order = args.instances if number % 2 == 0 else args.instances[::-1]
            for k in order:
                tag = f"{int(latency_ms)}-{number}-{k}"
                run = _round(database, bus, env, topology, args, k, tag)
                runs[k].append(run)
                print(
                    f"  latency={latency_ms:g}ms round {number}: {k} instance(s) "
                    f"{run.rate:.0f} events/s {run.cpu_per_event * 1e6:.0f} us CPU/event "
                    f"({run.events} events in {run.seconds:.1f}s; relay processes "
                    f"{run.cpu / run.seconds:.2f} cores, machine {run.machine_busy:.0%} busy)",
                    flush=True,
                )
    base = runs[args.instances[0]]
    parts = [
        f"{k}={statistics.median(r.rate for r in runs[k]):.0f} events/s "
        f"{statistics.median(r.cpu_per_event for r in runs[k]) * 1e6:.0f} us CPU/event"
        for k in args.instances
    ]
    ratios = [
        f"{k}/{args.instances[0]}="
        f"{statistics.median(a.rate / b.rate for a, b in zip(runs[k], base, strict=True)):.2f}"
        for k in args.instances[1:]
    ]
    return (
        f"scaleout_throughput latency={latency_ms:g}ms feed_ranges={args.ranges} "
        f"docs={args.docs} rounds={args.rounds} cores={os.cpu_count()}: {'; '.join(parts)}; "
        f"ratios {' '.join(ratios)} (goal 2/1 >= 1.7, median of per-round ratios)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout_throughput")
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ranges", type=int, default=4, help="feed ranges per container")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        metavar="MS",
        help="simulated round trip of the Cosmos DB server, repeatable (default: 0 and 5)",
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv or [])
    if any(args.ranges % k for k in args.instances):
        parser.error("every --instances value must divide --ranges (equal shares)")
    quiet_loopback_tls_warnings()
    topology = load_topology()
    for latency_ms in args.latency or [0.0, 5.0]:
        print(_measure(args, latency_ms, topology), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
