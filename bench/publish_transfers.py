"""AMQP transfers per published message: ServiceBusPublisher vs. the fewest possible.

N integration-event messages are built with the real mapping (outbox, CDC and event-store
documents as the change feed delivers them -> ``events.core.sources`` ->
``events.core.messages``), most of them small and a few of 60-120 kB so that batches split,
and published in order with ``ServiceBusPublisher`` to the local broker. The broker counts the
transfers (one per send).

Printed: the transfers used; the minimum (the fewest in-order batches that fit the broker's
batch limit); N, the count for one send per message; transfers/minimum (goal 1.0) and
transfers/N. Then the throughput of the publisher against a baseline that sends one
``send_messages(message)`` per message with the same SDK and client, in alternating rounds
with fresh message ids (duplicate detection would otherwise drop them), as the median ratio.

How the minimum is computed. A transfer goes to one entity, so each destination's messages
(in their order) are packed separately. The size of a batch on the wire is its envelope (the
batch message's properties: the first message's id and session id) plus one ``data`` section
per message, each measured by encoding exactly as the SDK does. A batch fits when that size is
at most the limit the broker advertises on the link (what ``create_message_batch()`` reports).
Greedy in order (add while it fits, else start a new batch) is optimal for in-order packing:
dropping messages from the front of a batch never makes it bigger (any message's section is
bigger than any envelope), so by induction greedy's k-th batch ends no earlier than the k-th
batch of any other packing, and it cannot need more batches.

    python -m bench.publish_transfers [--messages 2000] [--large 12] [--rounds 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessageBatch, ServiceBusSender
from azure.servicebus._pyamqp._encode import encode_payload

from devstack.servicebus import LocalServiceBus
from events.adapters.servicebus import BATCH_HEADROOM, ServiceBusPublisher, pack, to_sdk_message
from events.core.documents import partition_key_value
from events.core.messages import OutgoingMessage, Router, to_message
from events.core.publisher import group_by_destination
from events.core.sources import SourceContext, outbox_document, stream_event_document
from events.deployment import settings
from events.deployment.catalog import load_deployment
from events.deployment.contracts import (
    OrderPlacedV1,
    OrderShippedV1,
    default_registry,
)
from events.errors import PublishUnavailableError

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_LARGE_BYTES = (60_000, 120_000)
_SMALL_KINDS = ("placed", "upserted", "shipped", "authorized", "captured")


def _router() -> Router:
    declared = load_deployment().topology.service_bus
    return Router(default=declared.default_destination, routes=declared.routes)


def _traceparent(rng: random.Random) -> str:
    return f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"


def _document(kind: str, i: int, tag: str, rng: random.Random) -> dict[str, Any]:
    """One change-feed item (system fields included) that maps to exactly one public event."""
    order_id = f"order-{tag}-{i // 3:05d}"
    moment = _EPOCH + timedelta(seconds=i)
    stream = f"payment-{order_id}"
    payment = {"paymentId": stream, "orderId": order_id, "amountCents": rng.randint(100, 90_000)}
    document: dict[str, Any]
    if kind == "placed":
        placed = OrderPlacedV1(
            order_id=order_id,
            customer_id=f"customer-{rng.randint(1, 500)}",
            total_cents=rng.randint(500, 50_000),
            currency="EUR",
            line_count=rng.randint(1, 5),
        )
        document = _outbox(placed, order_id, moment, rng)
    elif kind in ("shipped", "large"):
        low, high = _LARGE_BYTES
        # The contracts have no bulky field; a long tracking number stands in for one (a
        # manifest, a label): what matters here is the encoded size, not the content.
        tracking = "T" * rng.randint(low, high) if kind == "large" else f"JD{rng.getrandbits(40)}"
        shipped = OrderShippedV1(order_id=order_id, carrier="DHL", tracking_number=tracking)
        document = _outbox(shipped, order_id, moment, rng)
    elif kind == "upserted":
        document = {
            "id": order_id,
            "partitionKey": order_id,
            "type": "Order",
            "status": rng.choice(("placed", "paid", "shipped")),
            "customerId": f"customer-{rng.randint(1, 500)}",
            "totalCents": rng.randint(500, 50_000),
            "currency": "EUR",
            "shippingAddress": {"street": "Hauptstrasse 1", "city": "Berlin"},
            "customerEmail": "never-published@example.com",
        }
    else:
        captured = kind == "captured"
        document = stream_event_document(
            stream_id=stream,
            version=i + 1,  # unique per item: equal ids would be dropped as duplicates
            event_type="PaymentCaptured" if captured else "PaymentAuthorized",
            data=payment if captured else {**payment, "currency": "EUR"},
            time=moment,
            traceparent=_traceparent(rng),
        )
    document.update({"_rid": "bench", "_etag": f'"{i}"', "_ts": int(moment.timestamp())})
    document["_lsn"] = i + 1
    return document


def _outbox(
    payload: OrderPlacedV1 | OrderShippedV1, order_id: str, moment: datetime, rng: random.Random
) -> dict[str, Any]:
    return outbox_document(
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        partition_key_field="partitionKey",
        partition_key=order_id,
        payload=payload,
        subject=order_id,
        time=moment,
        ttl_seconds=864_000,
        traceparent=_traceparent(rng),
    )


_EVENTSTORE_KINDS = ("authorized", "captured")
#: Kinds whose documents live in the orders container (outbox and CDC).
ORDER_KINDS = ("placed", "upserted", "shipped")


def _feed_of(kind: str) -> str:
    return "relay_eventstore" if kind in _EVENTSTORE_KINDS else "relay_orders"


def change_feed_documents(
    count: int, large: int, seed: int, tag: str, kinds: Sequence[str] = _SMALL_KINDS
) -> dict[str, list[dict[str, Any]]]:
    """``count`` change-feed items (``large`` of them 60-120 kB), per feed function name, in
    change-feed order; each maps to exactly one public event."""
    rng = random.Random(f"{seed}:{tag}")
    chosen = [rng.choice(kinds) for _ in range(count - large)] + ["large"] * large
    rng.shuffle(chosen)
    documents: dict[str, list[dict[str, Any]]] = {}
    for i, kind in enumerate(chosen):
        documents.setdefault(_feed_of(kind), []).append(_document(kind, i, tag, rng))
    return documents


def build_messages(count: int, large: int, seed: int, tag: str) -> list[OutgoingMessage]:
    """``count`` messages in change-feed order, mapped by the catalog's sources."""
    registry = default_registry()
    feeds = {definition.function_name: definition for definition in load_deployment().feeds}
    router = _router()
    prefix = settings.setting_defaults(load_deployment().topology)[settings.EVENT_SOURCE]
    messages: list[OutgoingMessage] = []
    for name, documents in change_feed_documents(count, large, seed, tag).items():
        feed = feeds[name]
        container = "eventstore" if name == "relay_eventstore" else "orders"
        context = SourceContext(f"{prefix}/relay/{container}", container, registry)
        for document in documents:
            source = next(s for s in feed.sources if s.claims(document))
            key = partition_key_value(document, feed.partition_key_path)
            events = source.to_events(document, key, context)
            messages.extend(to_message(event, router) for event in events)
    assert len(messages) == count, f"mapped {len(messages)} messages, expected {count}"
    return messages


def _wire(batch: ServiceBusMessageBatch) -> int:
    """The bytes the broker receives for this batch, encoded by the SDK's own encoder."""
    # Private on purpose: the public API has no wire size, and ``size_in_bytes`` leaves out
    # the batch envelope (first message id and session id), which the broker does count.
    output = bytearray()
    encode_payload(output, batch._message)
    return len(output)


def minimum_transfers(messages: Sequence[OutgoingMessage], limit: int) -> int:
    """The fewest in-order batches per destination whose wire size is at most ``limit``."""
    total = 0
    groups: dict[str, list[OutgoingMessage]] = {}
    for message in messages:
        groups.setdefault(message.destination, []).append(message)
    for group in groups.values():
        used: int | None = None
        for message in group:
            batch = ServiceBusMessageBatch(max_size_in_bytes=2 * limit)
            empty = batch.size_in_bytes
            batch.add_message(to_sdk_message(message))
            section = batch.size_in_bytes - empty  # the encoded message and its data section
            envelope = _wire(batch) - section  # what this message costs as a batch's first
            if used is not None and used + section <= limit:
                used += section
            else:
                total += 1
                used = envelope + section
    return total


def planned_batches(messages: Sequence[OutgoingMessage], limit: int) -> list[int]:
    """Wire sizes of the sends the publisher makes (its own packing; nothing is sent)."""
    return [
        _wire(send)
        for group in group_by_destination(messages).values()
        for send in pack(
            group, lambda: ServiceBusMessageBatch(max_size_in_bytes=limit - BATCH_HEADROOM)
        )
        if isinstance(send, ServiceBusMessageBatch)
    ]


def _transfers(bus: LocalServiceBus) -> int:
    return sum(bus.stats.transfers.values())


def _rejected(bus: LocalServiceBus) -> int:
    return sum(bus.stats.rejected.values())


def _one_per_message(
    client: ServiceBusClient,
    senders: dict[str, ServiceBusSender],
    messages: Sequence[OutgoingMessage],
) -> float:
    started = time.perf_counter()
    for message in messages:
        sender = senders.get(message.destination)
        if sender is None:
            sender = senders[message.destination] = client.get_topic_sender(message.destination)
        sender.send_messages(to_sdk_message(message))
    return len(messages) / (time.perf_counter() - started)


def _limit(client: ServiceBusClient, destination: str) -> int:
    with client.get_topic_sender(destination) as sender:
        return sender.create_message_batch().max_size_in_bytes


def _sizes(messages: Sequence[OutgoingMessage]) -> Mapping[str, int]:
    bodies = sorted(len(m.body) for m in messages)
    return {"median": bodies[len(bodies) // 2], "max": bodies[-1], "total": sum(bodies)}


@dataclass
class _Round:
    minimum: int
    plan: list[int]
    transfers: int
    rejected: int
    failure: str
    batched: float
    baseline: float


def _round(
    bus: LocalServiceBus,
    client: ServiceBusClient,
    publisher: ServiceBusPublisher,
    senders: dict[str, ServiceBusSender],
    args: argparse.Namespace,
    number: int,
) -> _Round:
    single = build_messages(args.messages, args.large, args.seed, f"s{number}")
    batch = build_messages(args.messages, args.large, args.seed, f"b{number}")
    limit = _limit(client, batch[0].destination)
    minimum = minimum_transfers(batch, limit)
    plan = planned_batches(batch, limit)
    failure = ""
    baseline = batched = 0.0
    # Alternate which strategy goes first: a warmer process favours the second.
    if number % 2:
        baseline = _one_per_message(client, senders, single)
    before, rejected_before = _transfers(bus), _rejected(bus)
    started = time.perf_counter()
    try:
        publisher.publish(batch)
        batched = len(batch) / (time.perf_counter() - started)
    except PublishUnavailableError as exc:
        failure = f"{exc} ({type(exc.__cause__).__name__})"
    transfers, rejected = _transfers(bus) - before, _rejected(bus) - rejected_before
    if not number % 2:
        baseline = _one_per_message(client, senders, single)
    return _Round(minimum, plan, transfers, rejected, failure, batched, baseline)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_transfers")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--large", type=int, default=12, help="how many 60-120 kB events")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv or [])
    rounds: list[_Round] = []
    with (
        LocalServiceBus() as bus,
        ServiceBusClient.from_connection_string(bus.connection_string) as client,
    ):
        publisher = ServiceBusPublisher(client)
        senders: dict[str, ServiceBusSender] = {}
        warm = build_messages(50, 0, args.seed, "warm-up")  # links and connections
        publisher.publish(warm)
        _one_per_message(client, senders, warm)
        limit = _limit(client, warm[0].destination)
        for number in range(args.rounds):
            result = _round(bus, client, publisher, senders, args, number)
            rounds.append(result)
            over = [size - limit for size in result.plan if size > limit]
            outcome = (
                f"FAILED after {result.transfers} transfers: {result.failure}"
                if result.failure
                else f"transfers/minimum={result.transfers / result.minimum:.2f} "
                f"throughput batched/one-per-message={result.batched / result.baseline:.1f}"
            )
            print(
                f"  round {number}: transfers={result.transfers} "
                f"(rejected by the broker: {result.rejected}) minimum={result.minimum} "
                f"plan={len(result.plan)} (over the limit on the wire: {len(over)}"
                + (f", by {min(over)}-{max(over)}B" if over else "")
                + f") {outcome}"
            )
        for sender in senders.values():
            sender.close()
        publisher.close()
    done = [r for r in rounds if not r.failure]
    sizes = _sizes(build_messages(args.messages, args.large, args.seed, "b0"))
    summary = (
        f"publish_transfers messages={args.messages} ({args.large} of 60-120 kB, body "
        f"median={sizes['median']}B) batch limit={limit}B one-per-message={args.messages} "
        f"rounds={len(rounds)} failed={len(rounds) - len(done)}"
    )
    if done:
        transfers = statistics.median(r.transfers for r in done)
        minimum = statistics.median(r.minimum for r in done)
        summary += (
            f"; median transfers={transfers:g} minimum={minimum:g} "
            f"transfers/minimum={statistics.median(r.transfers / r.minimum for r in done):.2f} "
            f"(goal 1.0) transfers/one-per-message={transfers / args.messages:.4f} "
            f"throughput batched/one-per-message="
            f"{statistics.median(r.batched / r.baseline for r in done):.1f}"
        )
    print(summary)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
