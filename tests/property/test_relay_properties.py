"""Properties of the relay over arbitrary JSON documents and batches (hypothesis).

The promises tried here, for any batch of any JSON documents:
- every document ends published, quarantined with a reason, or skipped, and the outcome says
  which, in numbers that add up;
- ``process`` raises nothing but ``TransientError``, and only when I/O failed;
- no two distinct changes share a message id;
- no field outside a contract leaves (every body holds only its contract's fields);
- a batch never reports success with an event unpublished, whatever sends failed before.

Documents come from two generators: arbitrary JSON objects (with the fields the relay reads
drawn often from values known to be nasty), and valid documents of every source kind with
some fields replaced by such values or removed, which reach deeper into each mapping.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from events.core.documents import SYSTEM_FIELDS
from events.core.messages import CLOUDEVENTS_PREFIX, Router
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine, QuarantineReason
from events.core.relay import Relay
from events.deployment.contracts import EventPayload, default_registry
from events.errors import TransientError
from tests import factories

Doc = dict[str, Any]

FEEDS = ("relay_orders", "relay_eventstore")

NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1e20,
    float("nan"),
    float("inf"),
    "",
    "\ud800",
    "a\nb",
    "x" * 200,
    "4200",
    [],
    {},
    ["Order"],
    {"kind": "Order"},
    "outbox",
    "Order",
    "stream-event",
    "OrderPlaced",
    "PaymentCaptured",
    "PaymentRiskScored",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00Z",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Copies: a drawn list or object must never be shared between documents (or put inside
# itself): change-feed documents are parsed JSON, trees without shared or circular parts.
values = (st.sampled_from(NASTY) | json_values).map(copy.deepcopy)

READ_FIELDS = (
    "id",
    "partitionKey",
    "streamId",
    "type",
    "_lsn",
    "_ts",
    "eventType",
    "eventVersion",
    "subject",
    "time",
    "data",
    "traceparent",
    "version",
    "deleted",
    "status",
    "totalCents",
)


@st.composite
def arbitrary_documents(draw: st.DrawFn) -> Doc:
    document: Doc = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    for name in draw(st.lists(st.sampled_from(READ_FIELDS), unique=True, max_size=8)):
        document[name] = draw(values)
    return document


def _valid(kind: str, key: str, n: int) -> Doc:
    builders: dict[str, Callable[[], Doc]] = {
        "placed": lambda: factories.placed(key, f"e-{n}"),
        "shipped": lambda: factories.shipped(key, f"e-{n}"),
        "order": lambda: factories.order(key),
        "deleted": lambda: factories.order(key, deleted=True),
        "authorized": lambda: factories.stream_event(key, n + 1),
        "captured": lambda: factories.stream_event(key, n + 1, "PaymentCaptured"),
        "private": lambda: factories.stream_event(key, n + 1, "PaymentRiskScored"),
    }
    return builders[kind]()


@st.composite
def mutated_documents(draw: st.DrawFn) -> Doc:
    kind = draw(
        st.sampled_from(
            ["placed", "shipped", "order", "deleted", "authorized", "captured", "private"]
        )
    )
    key = draw(st.sampled_from(["a", "b", "c"]) | st.text(min_size=1, max_size=6))
    document = _valid(kind, key, draw(st.integers(min_value=0, max_value=50)))
    for name in draw(st.lists(st.sampled_from(sorted(document)), unique=True, max_size=3)):
        if draw(st.booleans()):
            del document[name]
        else:
            document[name] = draw(values)
    data = document.get("data")
    if isinstance(data, dict) and draw(st.booleans()):
        field = draw(st.sampled_from(sorted(data) or ["x"]))
        data[field] = draw(values)
    return document


documents = mutated_documents() | arbitrary_documents()


def _identity(path: str) -> Callable[[Doc], str]:
    # Cosmos DB keeps (partition key, id) unique; a batch never holds one change twice.
    return lambda d: json.dumps([str(d.get(path)), str(d.get("id"))], default=repr)


batches = st.lists(
    documents,
    max_size=12,
    unique_by=(_identity("partitionKey"), _identity("streamId")),
)

_CONTRACTS: dict[str, type[EventPayload]] = {m.schema_uri(): m for m in default_registry()}


def _fields(model: type[EventPayload]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@given(batch=batches, feed=st.sampled_from(FEEDS))
def test_relay_any_batch_every_document_published_quarantined_or_skipped(
    batch: list[Doc], feed: str
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()

    outcome = runtime.relay(feed).process(batch)

    assert outcome.documents == len(batch)
    assert outcome.published + outcome.quarantined + outcome.skipped == len(batch)
    assert outcome.published == outcome.events
    assert len(quarantine.records) == outcome.quarantined
    for record in quarantine.records.values():
        assert isinstance(record.reason, QuarantineReason)
        assert record.error
    delivered = [m for messages in publisher.delivered.values() for m in messages]
    assert len(delivered) == outcome.published


@given(batch=batches, feed=st.sampled_from(FEEDS))
def test_relay_any_batch_distinct_changes_never_share_a_message_id(
    batch: list[Doc], feed: str
) -> None:
    runtime, publisher, _ = factories.in_memory_runtime()

    outcome = runtime.relay(feed).process(batch)

    delivered = [m.message_id for messages in publisher.delivered.values() for m in messages]
    assert publisher.duplicates == 0
    assert len(set(delivered)) == outcome.published


@given(batch=batches, feed=st.sampled_from(FEEDS))
def test_relay_any_batch_no_field_outside_its_contract_leaves(batch: list[Doc], feed: str) -> None:
    runtime, publisher, _ = factories.in_memory_runtime()

    runtime.relay(feed).process(batch)

    for message in (m for messages in publisher.delivered.values() for m in messages):
        schema = message.application_properties[f"{CLOUDEVENTS_PREFIX}dataschema"]
        body = json.loads(message.body)
        assert set(body) <= _fields(_CONTRACTS[schema])
        assert not SYSTEM_FIELDS & set(body)


@given(
    batch=batches,
    feed=st.sampled_from(FEEDS),
    failing_sends=st.lists(st.integers(min_value=1, max_value=4), max_size=4),
    batch_limit=st.sampled_from([600, 2048, 256 * 1024]),
)
def test_relay_any_batch_success_means_every_event_is_on_the_broker(
    batch: list[Doc], feed: str, failing_sends: list[int], batch_limit: int
) -> None:
    clean, clean_publisher, _ = factories.in_memory_runtime()
    expected = clean.relay(feed).process(batch)
    wanted = {m.message_id for messages in clean_publisher.delivered.values() for m in messages}
    flaky = InMemoryPublisher(["integration-events", "payments"], max_batch_size=batch_limit)
    runtime, _, _ = factories.in_memory_runtime(flaky, InMemoryQuarantine())
    relay = runtime.relay(feed)
    for ordinal in failing_sends:
        flaky.fail_on_send(ordinal)

    for _attempt in range(len(failing_sends) + 1):  # the host redelivers until success
        try:
            outcome = relay.process(batch)
            break
        except TransientError:
            continue
    else:
        raise AssertionError("the batch never succeeded although the broker recovered")

    delivered = {m.message_id for messages in flaky.delivered.values() for m in messages}
    assert outcome.published == expected.published
    assert delivered == wanted


@st.composite
def split_batches(draw: st.DrawFn) -> list[list[Doc]]:
    """Changes of a few aggregates of the orders feed, valid or broken, in change order (their
    ``_lsn`` is their position, as in a change feed), split into batches at arbitrary points."""
    changes: list[Doc] = draw(st.lists(mutated_documents() | arbitrary_documents(), max_size=16))
    for lsn, change in enumerate(changes, start=1):
        change["_lsn"] = lsn
        if isinstance(change.get("partitionKey"), str) and draw(st.booleans()):
            change["partitionKey"] = draw(st.sampled_from(["a", "b"]))  # crowd two aggregates
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(changes) - 1)))))
    bounds = [0, *[c for c in cuts if c < len(changes)], len(changes)]
    return [changes[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _relay_batches(batches: list[list[Doc]]) -> tuple[InMemoryPublisher, InMemoryQuarantine]:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay("relay_orders")
    for batch in batches:
        relay.process(copy.deepcopy(batch))
    return publisher, quarantine


def _sequence(message_properties: dict[str, Any]) -> int:
    return int(message_properties[f"{CLOUDEVENTS_PREFIX}sequence"])


@given(batches=split_batches())
def test_relay_any_split_no_change_published_after_an_earlier_quarantined_change(
    batches: list[list[Doc]],
) -> None:
    publisher, quarantine = _relay_batches(batches)

    published: dict[str, list[int]] = {}
    for message in publisher.delivered["integration-events"]:
        published.setdefault(str(message.session_id), []).append(
            _sequence(dict(message.application_properties))
        )
    for record in quarantine.records.values():
        if record.partition_key in published and record.lsn is not None:
            assert max(published[record.partition_key]) < record.lsn, (
                f"aggregate {record.partition_key!r}: a change after lsn {record.lsn} "
                "(quarantined) was published"
            )


@given(batches=split_batches())
def test_relay_any_split_publishes_and_quarantines_as_one_batch_would(
    batches: list[list[Doc]],
) -> None:
    whole_publisher, whole_quarantine = _relay_batches([[d for b in batches for d in b]])

    publisher, quarantine = _relay_batches(batches)

    assert [m.message_id for m in publisher.delivered["integration-events"]] == [
        m.message_id for m in whole_publisher.delivered["integration-events"]
    ]
    assert {i: r.reason for i, r in quarantine.records.items()} == {
        i: r.reason for i, r in whole_quarantine.records.items()
    }


@given(batches=split_batches(), again=st.data())
def test_relay_any_split_a_finished_batch_delivered_again_changes_nothing(
    batches: list[list[Doc]], again: st.DataObject
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay("relay_orders")
    for batch in batches:
        relay.process(copy.deepcopy(batch))
    published = [m.message_id for m in publisher.delivered["integration-events"]]
    reasons = {i: r.reason for i, r in quarantine.records.items()}
    if not batches:
        return

    redelivered = again.draw(st.sampled_from(batches))
    relay.process(copy.deepcopy(redelivered))

    assert [m.message_id for m in publisher.delivered["integration-events"]] == published
    assert {i: r.reason for i, r in quarantine.records.items()} == reasons


def _chunked_relay(chunk: int, publisher: InMemoryPublisher) -> tuple[Relay, InMemoryQuarantine]:
    config = factories.settings()
    store = InMemoryQuarantine()
    relay = Relay(
        factories.feed("relay_orders"),
        publisher,
        store,
        Router(default=config.default_destination, routes=config.routes),
        clock=lambda: factories.FIXED_TIME,
        chunk_documents=chunk,
    )
    return relay, store


@given(batches=split_batches(), chunk=st.integers(min_value=1, max_value=17))
def test_relay_any_chunk_size_publishes_and_quarantines_as_one_chunk_would(
    batches: list[list[Doc]], chunk: int
) -> None:
    whole = InMemoryPublisher(["integration-events", "payments"])
    chunked = InMemoryPublisher(["integration-events", "payments"])
    whole_relay, whole_store = _chunked_relay(10_000, whole)
    chunked_relay, chunked_store = _chunked_relay(chunk, chunked)

    for batch in batches:
        expected = whole_relay.process(copy.deepcopy(batch))
        outcome = chunked_relay.process(copy.deepcopy(batch))
        assert (outcome.published, outcome.quarantined, outcome.skipped) == (
            expected.published,
            expected.quarantined,
            expected.skipped,
        )

    assert [m.message_id for m in chunked.delivered["integration-events"]] == [
        m.message_id for m in whole.delivered["integration-events"]
    ]
    assert _quarantined(chunked_store) == _quarantined(whole_store)
    assert chunked_store.parks.keys() == whole_store.parks.keys()


def _quarantined(store: InMemoryQuarantine) -> dict[str, QuarantineReason]:
    return {i: r.reason for i, r in store.records.items()}


@given(
    batches=split_batches(),
    chunk=st.integers(min_value=1, max_value=17),
    failing_sends=st.lists(st.integers(min_value=1, max_value=6), max_size=4),
)
def test_relay_any_chunk_size_failures_then_retries_lose_and_duplicate_nothing(
    batches: list[list[Doc]], chunk: int, failing_sends: list[int]
) -> None:
    whole = InMemoryPublisher(["integration-events", "payments"])
    whole_relay, whole_store = _chunked_relay(10_000, whole)
    flaky = InMemoryPublisher(["integration-events", "payments"], max_batch_size=2048)
    relay, store = _chunked_relay(chunk, flaky)
    for ordinal in failing_sends:
        flaky.fail_on_send(ordinal)

    for batch in batches:
        whole_relay.process(copy.deepcopy(batch))
        for _attempt in range(len(failing_sends) + 1):  # the host redelivers until success
            try:
                relay.process(copy.deepcopy(batch))
                break
            except TransientError:
                continue
        else:
            raise AssertionError("the batch never succeeded although the broker recovered")

    delivered = [m.message_id for m in flaky.delivered["integration-events"]]
    assert delivered == [m.message_id for m in whole.delivered["integration-events"]]
    assert len(set(delivered)) == len(delivered)
    assert _quarantined(store) == _quarantined(whole_store)
