"""Relay throughput and CPU per event, as a process, against a raw SDK loop doing the minimum.

Documents: ``--docs`` outbox documents (order placed and shipped events, as in
bench/publish_transfers.py; each maps to exactly one event) already in a container of the
local Cosmos DB server when the clock starts.

- relay round: the documents are in the monitored ``orders`` container; ``python -m events
  run`` is started as a child process (the leases of earlier rounds already point past earlier
  rounds' documents) and timed until the local broker has accepted every event
  (``stats.messages``).
- raw round: the same kind of documents (fresh ids) in a container of their own; a child
  process (``python -m bench.relay_throughput --raw-child``) reads that container's change
  feed page by page with the azure-cosmos SDK (pages of 100, as the relay) and sends each
  page's messages in ``ServiceBusMessageBatch`` batches with the azure-servicebus SDK: no
  mapping (the messages were built beforehand, by the relay's own mapping), no size check, no
  quarantine, no checkpoints. The least a relay must do with these SDKs.

Both children are measured from the outside the same way: wall time and process CPU
(``/proc/<pid>/stat`` utime + stime) from the first event the broker accepted to the last,
so that interpreter start-up, imports and (for the relay) lease acquisition are left out;
the totals from the start of the process are printed too. Rounds alternate; medians of the
per-round ratios. Goals: relay events/s >= 0.8x raw, relay CPU per event <= 1.3x raw.

    python -m bench.relay_throughput [--docs 2000] [--rounds 3] [--seed 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from azure.cosmos import CosmosClient, DatabaseProxy, PartitionKey
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender
from azure.servicebus.exceptions import MessageSizeExceededError

from bench.publish_transfers import change_feed_documents
from bench.relay_cpu import Recording, dropping_publisher, relays_for
from devstack.cosmos import quiet_loopback_tls_warnings
from devstack.demo import Relay as DemoRelay
from devstack.demo import local_stack, relay_environment
from devstack.servicebus import LocalServiceBus
from events.adapters.cosmos.transport import CosmosTransport
from events.adapters.servicebus import BATCH_HEADROOM, ServiceBusPublisher
from events.connections import connection_string_parts
from events.core.messages import OutgoingMessage
from events.deployment import settings
from events.deployment.topology import load_topology

_OUTBOX_KINDS = ("placed", "shipped")
_PAGE = 100
_LOADERS = 8
_TIMEOUT = 300.0
_POLL = 0.01
_TICK = os.sysconf("SC_CLK_TCK")
_ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (a child not yet reaped keeps its final times)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class _Run:
    events: int
    seconds: float  # from the first accepted event to the last
    cpu: float  # over the same span
    total_seconds: float  # from the process start
    total_cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_event(self) -> float:
        return self.cpu / self.events


def _accepted(bus: LocalServiceBus) -> int:
    return sum(bus.stats.messages.values())


def _watch(bus: LocalServiceBus, process: subprocess.Popen[bytes], count: int) -> _Run:
    """Time a child until the broker has accepted ``count`` more messages."""
    started, before = time.perf_counter(), _accepted(bus)
    first: tuple[float, float, int] | None = None
    deadline = time.monotonic() + _TIMEOUT
    while True:
        accepted = _accepted(bus) - before
        now = time.perf_counter()
        if accepted and first is None:
            first = (now, _cpu_seconds(process.pid), accepted)
        if accepted >= count:
            cpu = _cpu_seconds(process.pid)
            break
        if process.poll() is not None and _accepted(bus) - before < count:
            raise RuntimeError(f"the child exited ({process.returncode}) after {accepted} events")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{accepted} of {count} events after {_TIMEOUT:g} s")
        time.sleep(_POLL)
    assert first is not None
    first_at, first_cpu, first_events = first
    return _Run(
        events=count - first_events,
        seconds=now - first_at,
        cpu=cpu - first_cpu,
        total_seconds=now - started,
        total_cpu=cpu,
    )


def _stored(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ("_rid", "_etag", "_ts", "_lsn")}


def _load(database: DatabaseProxy, container: str, documents: list[dict[str, Any]]) -> None:
    client = database.get_container_client(container)
    with ThreadPoolExecutor(_LOADERS) as loaders:
        for _ in loaders.map(client.upsert_item, [_stored(d) for d in documents]):
            pass


def _documents(count: int, seed: int, tag: str) -> list[dict[str, Any]]:
    [(_, documents)] = change_feed_documents(count, 0, seed, tag, _OUTBOX_KINDS).items()
    return documents


def _messages_of(documents: list[dict[str, Any]]) -> dict[str, list[OutgoingMessage]]:
    """Each document's messages, made by the relay's mapping (before the clock starts)."""
    recording = Recording(dropping_publisher())
    relay = relays_for(cast(ServiceBusPublisher, recording))["relay_orders"]
    out: dict[str, list[OutgoingMessage]] = {}
    for document in documents:
        recording.published = []
        relay.process([document])
        out[document["id"]] = recording.published
    return out


def _relay_round(
    database: DatabaseProxy, bus: LocalServiceBus, env: dict[str, str], docs: list[Any], n: int
) -> _Run:
    _load(database, "orders", docs)
    command = [sys.executable, "-m", "events", "run", *DemoRelay.OPTIONS]
    command += ["--start-from", "beginning", "--instance-id", f"bench-{n}"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            return _watch(bus, process, len(docs))
        finally:
            process.terminate()
            process.wait(timeout=30)


def _raw_round(
    database: DatabaseProxy, bus: LocalServiceBus, env: dict[str, str], docs: list[Any], n: int
) -> _Run:
    container = f"bench-raw-{n}"
    database.create_container(container, PartitionKey("/partitionKey"))
    _load(database, container, docs)
    plan = {
        "container": container,
        "count": len(docs),
        "messages": {
            doc_id: [
                {
                    "destination": m.destination,
                    "message_id": m.message_id,
                    "session_id": m.session_id,
                    "subject": m.subject,
                    "content_type": m.content_type,
                    "body": base64.b64encode(m.body).decode(),
                    "properties": dict(m.application_properties),
                }
                for m in messages
            ]
            for doc_id, messages in _messages_of(docs).items()
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as directory:
        path = Path(directory) / "plan.json"
        path.write_text(json.dumps(plan))
        command = [sys.executable, "-m", "bench.relay_throughput", "--raw-child", str(path)]
        process = subprocess.Popen(command, cwd=_ROOT, env={**os.environ, **env})
        try:
            return _watch(bus, process, len(docs))
        finally:
            process.wait(timeout=60)


def _raw_child(plan_path: str) -> None:
    """Read the change feed page by page and send each page's messages in SDK batches."""
    quiet_loopback_tls_warnings()
    plan = json.loads(Path(plan_path).read_text())
    topology = load_topology()
    parts = connection_string_parts(os.environ[settings.COSMOS_CONNECTION])
    cosmos = CosmosClient(
        parts["accountendpoint"],
        credential=parts["accountkey"],
        connection_verify=False,
        transport=CosmosTransport(),  # the relay's transport: the loop differs in its work only
    )
    container = cosmos.get_database_client(topology.cosmos.database).get_container_client(
        plan["container"]
    )
    messages: dict[str, list[dict[str, Any]]] = plan["messages"]
    with ServiceBusClient.from_connection_string(
        os.environ[settings.SERVICEBUS_CONNECTION]
    ) as client:
        senders: dict[str, ServiceBusSender] = {}
        limits: dict[str, int] = {}
        seen = 0
        pages = container.query_items_change_feed(
            start_time="Beginning", max_item_count=_PAGE
        ).by_page()
        for page in pages:
            groups: dict[str, list[dict[str, Any]]] = {}
            for document in page:
                seen += 1
                for message in messages[document["id"]]:
                    groups.setdefault(message["destination"], []).append(message)
            for destination, group in groups.items():
                if destination not in senders:
                    senders[destination] = client.get_topic_sender(destination)
                    link = senders[destination].create_message_batch().max_size_in_bytes
                    limits[destination] = link - BATCH_HEADROOM
                _send(senders[destination], limits[destination], group)
            if seen >= plan["count"]:
                break
        for sender in senders.values():
            sender.close()


def _send(sender: ServiceBusSender, limit: int, group: list[dict[str, Any]]) -> None:
    batch = sender.create_message_batch(limit)
    for message in group:
        sdk_message = ServiceBusMessage(
            body=base64.b64decode(message["body"]),
            message_id=message["message_id"],
            session_id=message["session_id"],
            subject=message["subject"],
            content_type=message["content_type"],
            application_properties=message["properties"],
        )
        try:
            batch.add_message(sdk_message)
        except MessageSizeExceededError:
            sender.send_messages(batch)
            batch = sender.create_message_batch(limit)
            batch.add_message(sdk_message)
    if len(batch):
        sender.send_messages(batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_throughput")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--raw-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv or [])
    if args.raw_child:
        _raw_child(args.raw_child)
        return
    quiet_loopback_tls_warnings()
    topology = load_topology()
    relays: list[_Run] = []
    raws: list[_Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-throughput-") as data,
        local_stack(topology, Path(data)) as (cosmos, bus),
    ):
        database = cosmos.client().get_database_client(topology.cosmos.database)
        env = relay_environment(cosmos, bus)
        rounds: list[tuple[str, Callable[..., _Run], list[_Run]]] = []
        # A short warm-up of each side (links, the server's first requests), then rounds in
        # alternating order.
        _relay_round(database, bus, env, _documents(50, args.seed, "warm-relay"), -1)
        _raw_round(database, bus, env, _documents(50, args.seed, "warm-raw"), -1)
        for number in range(args.rounds):
            rounds = [("relay", _relay_round, relays), ("raw", _raw_round, raws)]
            for name, run, results in rounds if number % 2 == 0 else rounds[::-1]:
                docs = _documents(args.docs, args.seed + number, f"{name}-{number}")
                results.append(run(database, bus, env, docs, number))
            relay, raw = relays[-1], raws[-1]
            print(
                f"  round {number}: relay {relay.rate:.0f} events/s "
                f"{relay.cpu_per_event * 1e6:.0f} us CPU/event (start to end: "
                f"{relay.total_seconds:.1f}s, {relay.total_cpu:.1f}s CPU); raw "
                f"{raw.rate:.0f} events/s {raw.cpu_per_event * 1e6:.0f} us CPU/event "
                f"(start to end: {raw.total_seconds:.1f}s, {raw.total_cpu:.1f}s CPU)"
            )
    pairs = list(zip(relays, raws, strict=True))
    print(
        f"relay_throughput documents={args.docs} rounds={args.rounds} "
        f"relay={statistics.median(r.rate for r in relays):.0f} events/s "
        f"{statistics.median(r.cpu_per_event for r in relays) * 1e6:.0f} us CPU/event; "
        f"raw={statistics.median(r.rate for r in raws):.0f} events/s "
        f"{statistics.median(r.cpu_per_event for r in raws) * 1e6:.0f} us CPU/event; "
        f"events/s relay/raw={statistics.median(a.rate / b.rate for a, b in pairs):.2f} "
        f"(goal >= 0.8) CPU/event relay/raw="
        f"{statistics.median(a.cpu_per_event / b.cpu_per_event for a, b in pairs):.2f} "
        f"(goal <= 1.3)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
