"""CPU per event: the relay vs. the raw SDK building and encoding the same messages; and the
peak memory of one large batch through the relay.

No network. The relay side is ``Relay.process`` over change-feed documents (outbox, CDC and
event-store documents, as in bench/publish_transfers.py) with the real ``ServiceBusPublisher``
on an SDK client stand-in whose senders build real ``ServiceBusMessageBatch`` objects and
drop them instead of transferring them: mapping, contracts, envelope, size check, packing and
the publisher's worker threads are all measured. The raw side builds a ``ServiceBusMessage``
per message (the messages the relay produced, precomputed) and adds it to
``ServiceBusMessageBatch`` objects of the same limit, a new batch when one is full: the least
any relay must do with this SDK. CPU is ``time.process_time()`` (every thread of this
process). Rounds alternate which side goes first; the median of the per-round ratios is
printed (goal <= 1.25).

Memory: ``tracemalloc`` peak while one batch of ``--memory-docs`` documents goes through
``Relay.process`` (same stand-in publisher), against the size of that batch as JSON (goal
<= 2): once with the relay's chunks (``CHUNK_DOCUMENTS``), once with the whole batch as one
chunk, for comparison. The documents themselves are allocated before tracing starts.

    python -m bench.relay_cpu [--docs 2000] [--rounds 5] [--memory-docs 10000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageBatch,
)
from azure.servicebus.exceptions import MessageSizeExceededError

from bench.publish_transfers import ORDER_KINDS, change_feed_documents
from events.adapters.servicebus import BATCH_HEADROOM, ServiceBusPublisher
from events.core.messages import OutgoingMessage, Router
from events.core.publisher import group_by_destination
from events.core.quarantine import InMemoryQuarantine
from events.core.relay import CHUNK_DOCUMENTS, Feed, Relay
from events.deployment import settings
from events.deployment.catalog import load_deployment

_LINK_LIMIT = 256 * 1024


class _DroppingSender:
    """A sender that builds real SDK batches and drops them instead of transferring them."""

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or _LINK_LIMIT)

    def send_messages(self, message: object, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _DroppingClient:
    fully_qualified_namespace = "bench.local:5672"

    def get_topic_sender(self, name: str) -> _DroppingSender:
        return _DroppingSender()


def dropping_publisher() -> ServiceBusPublisher:
    """The real Service Bus publisher on senders that build batches and send nothing."""
    return ServiceBusPublisher(cast(ServiceBusClient, _DroppingClient()))


def relays_for(
    publisher: ServiceBusPublisher, chunk_documents: int = CHUNK_DOCUMENTS
) -> dict[str, Relay]:
    deployment = load_deployment()
    declared = deployment.topology.service_bus
    router = Router(default=declared.default_destination, routes=declared.routes)
    prefix = settings.setting_defaults(deployment.topology)[settings.EVENT_SOURCE]
    relays: dict[str, Relay] = {}
    for definition in deployment.feeds:
        feed = Feed(
            name=definition.function_name,
            container=definition.container,
            partition_key_path=definition.partition_key_path,
            sources=definition.sources,
            source_uri=f"{prefix}/relay/{definition.container}",
            contracts=deployment.contracts,
        )
        relays[definition.function_name] = Relay(
            feed, publisher, InMemoryQuarantine(), router, chunk_documents=chunk_documents
        )
    return relays


def _sdk_message(message: OutgoingMessage) -> ServiceBusMessage:
    properties: dict[str | bytes, Any] = {k: v for k, v in message.application_properties.items()}
    return ServiceBusMessage(
        body=message.body,
        message_id=message.message_id,
        session_id=message.session_id,
        subject=message.subject,
        content_type=message.content_type,
        application_properties=properties,
    )


def raw_sdk(messages: Sequence[OutgoingMessage]) -> int:
    """Build and batch-encode every message with the SDK alone; the number of batches."""
    limit = _LINK_LIMIT - BATCH_HEADROOM
    batches = 0
    for group in group_by_destination(messages).values():
        batch = ServiceBusMessageBatch(max_size_in_bytes=limit)
        for message in group:
            sdk_message = _sdk_message(message)
            try:
                batch.add_message(sdk_message)
            except MessageSizeExceededError:
                batches += 1
                batch = ServiceBusMessageBatch(max_size_in_bytes=limit)
                batch.add_message(sdk_message)
        batches += 1
    return batches


@dataclass(frozen=True)
class Workload:
    """Documents per feed, and the messages the relay makes of them."""

    documents: dict[str, list[dict[str, Any]]]
    messages: list[OutgoingMessage]

    @property
    def events(self) -> int:
        return len(self.messages)


class Recording:
    """A publisher wrapper that keeps what the relay published (to build the raw side)."""

    def __init__(self, inner: ServiceBusPublisher) -> None:
        self.inner = inner
        self.published: list[OutgoingMessage] = []

    def check(self, message: OutgoingMessage) -> OutgoingMessage:
        return self.inner.check(message)

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        self.published.extend(messages)
        return self.inner.publish(messages)


def workload(count: int, seed: int, tag: str) -> Workload:
    documents = change_feed_documents(count, 0, seed, tag)
    recording = Recording(dropping_publisher())
    for feed, batch in documents.items():
        relays_for(cast(ServiceBusPublisher, recording))[feed].process(batch)
    return Workload(documents, recording.published)


def relay_cpu(relays: dict[str, Relay], work: Workload) -> float:
    """CPU seconds for the relay to process every document of the workload."""
    gc.collect()
    started = time.process_time()
    published = sum(relays[feed].process(batch).published for feed, batch in work.documents.items())
    spent = time.process_time() - started
    assert published == work.events, f"relay published {published} of {work.events}"
    return spent


def raw_cpu(work: Workload) -> float:
    gc.collect()
    started = time.process_time()
    raw_sdk(work.messages)
    return time.process_time() - started


def peak_memory(
    count: int, seed: int, chunk_documents: int = CHUNK_DOCUMENTS
) -> tuple[int, int, int]:
    """(peak bytes traced during one Relay.process, the batch's JSON bytes, events)."""
    # Orders-container documents only: the whole batch is one feed's, as a host delivers it.
    [(feed, batch)] = change_feed_documents(count, 0, seed, "memory", ORDER_KINDS).items()
    relays = relays_for(dropping_publisher(), chunk_documents)
    text = len(json.dumps(batch).encode())
    relays[feed].process(batch[:10])  # imports, caches and the sender, outside the trace
    gc.collect()
    tracemalloc.start()
    try:
        outcome = relays[feed].process(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, text, outcome.published


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_cpu")
    parser.add_argument("--docs", type=int, default=2000, help="documents per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv or [])
    random.seed(args.seed)
    work = workload(args.docs, args.seed, "cpu")
    relays = relays_for(dropping_publisher())
    relay_cpu(relays, work)  # warm-up of both sides
    raw_cpu(work)
    ratios: list[float] = []
    relay_us: list[float] = []
    raw_us: list[float] = []
    for number in range(args.rounds):
        if number % 2:
            raw = raw_cpu(work)
            relay = relay_cpu(relays, work)
        else:
            relay = relay_cpu(relays, work)
            raw = raw_cpu(work)
        ratios.append(relay / raw)
        relay_us.append(relay / work.events * 1e6)
        raw_us.append(raw / work.events * 1e6)
        print(
            f"  round {number}: relay {relay_us[-1]:.0f} us/event, raw SDK "
            f"{raw_us[-1]:.0f} us/event, ratio {ratios[-1]:.2f}"
        )
    print(
        f"relay_cpu documents={args.docs} events={work.events} rounds={args.rounds} "
        f"relay={statistics.median(relay_us):.0f} us/event "
        f"raw SDK={statistics.median(raw_us):.0f} us/event "
        f"ratio relay/raw={statistics.median(ratios):.2f} (goal <= 1.25)"
    )
    if args.memory_docs:
        # The relay's chunks, then the whole batch as one chunk (what the peak was before).
        for chunk in (CHUNK_DOCUMENTS, args.memory_docs):
            peak, text, events = peak_memory(args.memory_docs, args.seed, chunk)
            print(
                f"relay_memory documents={args.memory_docs} chunk={chunk} events={events} "
                f"JSON={text / 1e6:.1f} MB peak={peak / 1e6:.1f} MB "
                f"ratio peak/JSON={peak / text:.2f} (goal <= 2)"
            )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
