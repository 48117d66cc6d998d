"""The chaos test's application: a seeded plan of writes over hundreds of aggregates, and the
writer that performs it with the real SDK while faults are injected.

Aggregates and what they write (the plan interleaves their steps at random, keeping each
aggregate's own order):

- orders (``orders`` container): placed through the outbox writer (entity + OrderPlaced),
  a few CDC-only status/total updates, shipped (entity + OrderShipped); some place their
  OrderPlaced with an id full of odd characters (valid: it must arrive like any other);
- payment streams (``eventstore``): appends of PaymentAuthorized, PaymentRiskScored (private,
  never published) and PaymentCaptured (routed to the ``payments`` queue);
- poison documents, written raw with the SDK, each on an aggregate of its own or as the LAST
  change of a valid aggregate, so the expected outcome does not depend on batching: every
  valid event arrives, every poison document is quarantined;
- hostile documents no source claims (a ``type`` that is a list or an object), written in the
  MIDDLE of a valid order: skipped, neither published nor quarantined, and the order's later
  events still arrive.

Expected event ids come from the APIs (``OutboxWriter.save`` returns them;
``eventstore_event_id``). CDC events are checked by each order's final state (the
latest-version change feed may merge quick updates, so their ids are not knowable upfront).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.core.exceptions import AzureError
from azure.cosmos import DatabaseProxy
from azure.cosmos.exceptions import CosmosResourceExistsError

from events.adapters.cosmos.eventstore import EventStore, NewEvent
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.core.sources.eventstore import eventstore_event_id, stream_event_id
from events.core.sources.outbox import outbox_event_id
from events.deployment.contracts import OrderPlacedV1, OrderShippedV1
from events.errors import ConcurrencyConflictError, OutboxConflictError, StoreUnavailableError

__all__ = [
    "INTEGRATION_EVENTS",
    "PAYMENTS",
    "Expected",
    "Plan",
    "Writer",
    "build_plan",
    "describe",
]

INTEGRATION_EVENTS = "integration-events"
PAYMENTS = "payments"
ORDERS = "orders"
EVENTSTORE = "eventstore"

#: Text that is a valid Cosmos DB id (the SDK refuses / \\ # ? tab CR LF and a trailing space)
#: but hostile to anything that builds names, URLs or JSON by hand.
ODD_ID_TEXT = "odd ü ☃ 'q\" %2F +&=;,:@~ \x1f <>{} end"

_STREAM_EVENTS: Mapping[str, str | None] = {
    "PaymentAuthorized": INTEGRATION_EVENTS,
    "PaymentRiskScored": None,  # private: stays in the stream
    "PaymentCaptured": PAYMENTS,
}

#: Why a poison document must be quarantined, by kind (printed and counted per kind).
POISON_KINDS = (
    "outbox-bad-time",
    "outbox-unknown-event-type",
    "outbox-unknown-event-version-last-of-aggregate",
    "outbox-missing-partition-key",
    "outbox-contract-violation",
    "outbox-data-not-an-object",
    "outbox-odd-id-unknown-event-type",
    "outbox-partition-key-too-long-for-a-session",
    "cdc-contract-violation",
    "stream-contract-violation-last-of-stream",
    "stream-version-not-an-integer",
    "stream-id-off-convention",
)


@dataclass(frozen=True)
class Step:
    """One write of one aggregate."""

    aggregate: str
    kind: Literal["place", "update", "ship", "append", "raw"]
    status: str = ""
    total: int = 0
    event_id: str = ""
    version: int = 0
    event_types: tuple[str, ...] = ()
    container: str = ""
    document: Mapping[str, Any] = field(default_factory=dict)
    hostile: str = ""  # the kind of a raw (poison or skipped) document


@dataclass(frozen=True)
class Plan:
    seed: int
    steps: tuple[Step, ...]
    aggregates: int
    #: order id -> (status, totalCents) of its last entity write: its final CDC state.
    final_states: Mapping[str, tuple[str, int]]
    #: (container, document id) of every poison document.
    poison: frozenset[tuple[str, str]]
    #: (container, document id) of every document no source claims.
    skipped: frozenset[tuple[str, str]]
    hostile_kinds: Mapping[str, int]

    @property
    def documents(self) -> int:
        """Cosmos DB documents the plan writes (entities, outbox and stream events, poison)."""
        count = 0
        for step in self.steps:
            if step.kind in ("place", "ship"):
                count += 2
            elif step.kind == "append":
                count += len(step.event_types)
            else:
                count += 1
        return count


def _valid_outbox_doc(pk: str | None, doc_id: str, rng: random.Random) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": doc_id,
        "type": "outbox",
        "eventType": "OrderPlaced",
        "eventVersion": 1,
        "subject": pk or doc_id,
        "time": "2026-11-27T10:00:00+00:00",
        "data": {
            "orderId": pk or doc_id,
            "customerId": f"customer-{rng.randint(1, 50)}",
            "totalCents": rng.randint(100, 90_000),
            "currency": "EUR",
            "lineCount": rng.randint(1, 5),
        },
    }
    if pk is not None:
        document["partitionKey"] = pk
    return document


def _stream_doc(stream: str, version: int, event_type: str) -> dict[str, Any]:
    return {
        "id": stream_event_id(stream, version),
        "streamId": stream,
        "version": version,
        "type": "stream-event",
        "eventType": event_type,
        "eventVersion": 1,
        "time": "2026-11-27T10:00:00+00:00",
        "data": {"paymentId": stream, "orderId": f"order-of-{stream}", "amountCents": 1000},
    }


def _poison(kind: str, number: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(container, document) of one poison document on an aggregate of its own."""
    pk = f"poison-{number:03d}"
    doc_id = f"poison-doc-{number:03d}"
    outbox = _valid_outbox_doc(pk, doc_id, rng)
    if kind == "outbox-bad-time":
        return ORDERS, {**outbox, "time": "yesterday at noon"}
    if kind == "outbox-unknown-event-type":
        return ORDERS, {**outbox, "eventType": "OrderTeleported"}
    if kind == "outbox-missing-partition-key":
        return ORDERS, _valid_outbox_doc(None, doc_id, rng)
    if kind == "outbox-contract-violation":
        return ORDERS, {**outbox, "data": {**outbox["data"], "totalCents": -5, "currency": "EURO"}}
    if kind == "outbox-data-not-an-object":
        return ORDERS, {**outbox, "data": "totalCents=5"}
    if kind == "outbox-odd-id-unknown-event-type":
        return ORDERS, {**outbox, "id": f"{ODD_ID_TEXT} {number}", "eventType": "Odd"}
    if kind == "outbox-partition-key-too-long-for-a-session":
        long_pk = f"{pk}-" + "k" * 200  # Service Bus session ids hold at most 128 characters
        return ORDERS, {**outbox, "partitionKey": long_pk, "subject": long_pk}
    if kind == "cdc-contract-violation":
        return ORDERS, {
            "id": pk,
            "partitionKey": pk,
            "type": "Order",
            "status": "teleported",
            "customerId": "customer-1",
            "totalCents": 100,
            "currency": "EUR",
        }
    stream = f"poison-stream-{number:03d}"
    if kind == "stream-version-not-an-integer":
        return EVENTSTORE, {**_stream_doc(stream, 1, "PaymentAuthorized"), "version": "1"}
    if kind == "stream-id-off-convention":
        return EVENTSTORE, {**_stream_doc(stream, 1, "PaymentAuthorized"), "id": f"{stream}-v1"}
    raise ValueError(f"no poison of kind {kind!r} on an aggregate of its own")


def build_plan(seed: int, *, orders: int = 160, streams: int = 60) -> Plan:
    """The same seed always gives the same plan (ids included)."""
    rng = random.Random(seed)
    ids = random.Random(seed ^ 0x5EED)  # a separate stream: ids do not shift the shape
    queues: list[list[Step]] = []
    final_states: dict[str, tuple[str, int]] = {}
    poison: set[tuple[str, str]] = set()
    skipped: set[tuple[str, str]] = set()
    hostile_kinds: Counter[str] = Counter()
    poison_number = 0

    def next_poison() -> int:
        nonlocal poison_number
        poison_number += 1
        return poison_number

    for number in range(1, orders + 1):
        order = f"order-{number:04d}"
        total = rng.randint(500, 50_000)
        odd = rng.random() < 0.05
        event_id = f"{ODD_ID_TEXT} {order}" if odd else str(uuid.UUID(int=ids.getrandbits(128)))
        steps = [Step(order, "place", status="placed", total=total, event_id=event_id)]
        for _ in range(rng.randint(1, 6)):
            total += rng.randint(1, 100)  # every entity write has a distinct final state
            steps.append(Step(order, "update", status=rng.choice(("paid", "placed")), total=total))
        if rng.random() < 0.06:  # no source claims it: skipped, and must not block the order
            kind = rng.choice(("type-is-a-list", "type-is-an-object"))
            document = _valid_outbox_doc(order, f"{order}-{kind}", rng)
            document["type"] = ["outbox"] if kind == "type-is-a-list" else {"is": "outbox"}
            steps.insert(
                rng.randint(1, len(steps) - 1),
                Step(order, "raw", container=ORDERS, document=document, hostile=kind),
            )
            skipped.add((ORDERS, document["id"]))
            hostile_kinds[kind] += 1
        if rng.random() < 0.7:
            total += 1
            ship_id = str(uuid.UUID(int=ids.getrandbits(128)))
            steps.append(Step(order, "ship", status="shipped", total=total, event_id=ship_id))
        final_states[order] = (steps[-1].status, total)
        if rng.random() < 0.04:  # poison as the last change of a valid aggregate
            kind = "outbox-unknown-event-version-last-of-aggregate"
            document = {
                **_valid_outbox_doc(order, f"{order}-last-poison", rng),
                "eventVersion": 9,
            }
            steps.append(Step(order, "raw", container=ORDERS, document=document, hostile=kind))
            poison.add((ORDERS, document["id"]))
            hostile_kinds[kind] += 1
        queues.append(steps)

    for number in range(1, streams + 1):
        stream = f"payment-{number:04d}"
        version = 0
        steps = []
        for _ in range(rng.randint(3, 8)):
            types = tuple(rng.choice(tuple(_STREAM_EVENTS)) for _ in range(rng.randint(1, 4)))
            steps.append(Step(stream, "append", version=version, event_types=types))
            version += len(types)
        if rng.random() < 0.08:
            kind = "stream-contract-violation-last-of-stream"
            document = _stream_doc(stream, version + 1, "PaymentCaptured")
            document["data"] = {"paymentId": stream}  # no orderId, no amountCents
            steps.append(Step(stream, "raw", container=EVENTSTORE, document=document, hostile=kind))
            poison.add((EVENTSTORE, document["id"]))
            hostile_kinds[kind] += 1
        queues.append(steps)

    own_kinds = [k for k in POISON_KINDS if "last-of" not in k]
    for kind in own_kinds:
        for _ in range(rng.randint(1, 3)):
            container, document = _poison(kind, next_poison(), rng)
            queues.append(
                [
                    Step(
                        str(document.get("partitionKey", document.get("streamId", document["id"]))),
                        "raw",
                        container=container,
                        document=document,
                        hostile=kind,
                    )
                ]
            )
            poison.add((container, document["id"]))
            hostile_kinds[kind] += 1

    aggregates = len(queues)
    steps_in_order: list[Step] = []
    pending = [q for q in queues if q]
    while pending:
        index = rng.randrange(len(pending))
        steps_in_order.append(pending[index].pop(0))
        if not pending[index]:
            pending.pop(index)
    return Plan(
        seed=seed,
        steps=tuple(steps_in_order),
        aggregates=aggregates,
        final_states=final_states,
        poison=frozenset(poison),
        skipped=frozenset(skipped),
        hostile_kinds=dict(hostile_kinds),
    )


@dataclass
class Expected:
    """What must arrive, filled in by the writer as its writes succeed (thread-safe)."""

    ids: dict[str, str] = field(default_factory=dict)  # event id -> destination
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event_ids: list[str], destination: str) -> None:
        with self.lock:
            for event_id in event_ids:
                self.ids[event_id] = destination

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return dict(self.ids)


#: Errors after which a write may or may not have happened: retry it (idempotently).
_RETRYABLE = (StoreUnavailableError, AzureError, OSError)


class WriteTimeoutError(Exception):
    """A write kept failing until the writer's deadline."""


class Writer:
    """Performs a plan's steps at a steady pace with the real SDK; retries through outages."""

    def __init__(self, database: DatabaseProxy, plan: Plan, expected: Expected) -> None:
        self._orders = database.get_container_client(ORDERS)
        self._eventstore = database.get_container_client(EVENTSTORE)
        self._outbox = OutboxWriter(self._orders)
        self._streams = EventStore(self._eventstore)
        self._plan = plan
        self._expected = expected
        self.written = 0
        self.retries = 0
        self.failure: Exception | None = None

    def run(self, duration: float, deadline: float, stop: threading.Event) -> None:
        """Spread the steps over ``duration`` seconds; give up at ``deadline`` (monotonic)."""
        try:
            start = time.monotonic()
            interval = duration / max(1, len(self._plan.steps))
            for index, step in enumerate(self._plan.steps):
                if stop.wait(max(0.0, start + index * interval - time.monotonic())):
                    return
                self._with_retries(step, deadline, stop)
                self.written += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def _with_retries(self, step: Step, deadline: float, stop: threading.Event) -> None:
        attempt = 0
        while True:
            try:
                self._write(step, retry=attempt > 0)
                return
            except _RETRYABLE as exc:
                attempt += 1
                self.retries += 1
                if time.monotonic() > deadline or stop.is_set():
                    raise WriteTimeoutError(f"{step.aggregate} {step.kind}: {exc!r}") from exc
                stop.wait(min(1.0, 0.1 * attempt))

    def _write(self, step: Step, *, retry: bool) -> None:
        if step.kind in ("place", "update", "ship"):
            self._save_order(step, retry=retry)
        elif step.kind == "append":
            self._append(step, retry=retry)
        else:
            container = self._orders if step.container == ORDERS else self._eventstore
            try:
                container.create_item(dict(step.document))
            except CosmosResourceExistsError:
                if not retry:
                    raise
                # An earlier attempt was written before its answer was lost.

    def _save_order(self, step: Step, *, retry: bool) -> None:
        entity = {
            "id": step.aggregate,
            "partitionKey": step.aggregate,
            "type": "Order",
            "status": step.status,
            "customerId": "customer-7",
            "totalCents": step.total,
            "currency": "EUR",
            "customerEmail": "never-published@example.com",
        }
        events: list[OutboxEvent] = []
        if step.kind == "place":
            placed = OrderPlacedV1(
                order_id=step.aggregate,
                customer_id="customer-7",
                total_cents=step.total,
                currency="EUR",
                line_count=2,
            )
            events.append(OutboxEvent(placed, subject=step.aggregate, event_id=step.event_id))
        elif step.kind == "ship":
            shipped = OrderShippedV1(order_id=step.aggregate, carrier="DHL")
            events.append(OutboxEvent(shipped, subject=step.aggregate, event_id=step.event_id))
        try:
            ids = self._outbox.save(entity, events)
        except OutboxConflictError:
            if not (retry and events):
                raise
            # The earlier attempt committed (one atomic batch): its ids are the same.
            ids = [_outbox_id(step.aggregate, e.event_id) for e in events]
        self._expected.add(ids, INTEGRATION_EVENTS)

    def _append(self, step: Step, *, retry: bool) -> None:
        new = [NewEvent(t, _stream_data(step.aggregate, t)) for t in step.event_types]
        try:
            self._streams.append(step.aggregate, step.version, new)
        except ConcurrencyConflictError:
            if not retry:
                raise  # the plan is the stream's only writer
        for offset, event_type in enumerate(step.event_types, start=1):
            destination = _STREAM_EVENTS[event_type]
            if destination is not None:
                event_id = eventstore_event_id(EVENTSTORE, step.aggregate, step.version + offset)
                self._expected.add([event_id], destination)


def _outbox_id(partition_key: str, document_id: str) -> str:
    return outbox_event_id(ORDERS, partition_key, document_id)


def _stream_data(stream: str, event_type: str) -> dict[str, Any]:
    if event_type == "PaymentRiskScored":
        return {"score": 0.5}
    return {
        "paymentId": stream,
        "orderId": f"order-of-{stream}",
        "amountCents": 1000,
        "currency": "EUR",
    }


def describe(plan: Plan) -> str:
    kinds = " ".join(f"{k}={n}" for k, n in sorted(plan.hostile_kinds.items()))
    return (
        f"documents={plan.documents} steps={len(plan.steps)} aggregates={plan.aggregates} "
        f"orders={len(plan.final_states)} poison={len(plan.poison)} "
        f"skipped={len(plan.skipped)} ({kinds})"
    )
