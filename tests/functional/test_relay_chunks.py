"""A batch larger than a chunk goes out chunk by chunk: same outcome per aggregate, done only
when every chunk is, and a failure in any chunk retries the whole batch without loss or
duplicate at the consumer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from events.core.messages import Router
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine, QuarantineReason
from events.core.relay import Relay
from events.errors import PublishUnavailableError, is_transient
from tests import factories

FEED = "relay_orders"
BLOCKED = QuarantineReason.BLOCKED_BEHIND_QUARANTINED


def _relay(
    chunk: int, publisher: InMemoryPublisher | None = None
) -> tuple[InMemoryPublisher, InMemoryQuarantine, Relay]:
    pub = publisher or InMemoryPublisher(["integration-events", "payments"])
    store = InMemoryQuarantine()
    config = factories.settings()
    router = Router(default=config.default_destination, routes=config.routes)
    relay = Relay(
        factories.feed(FEED),
        pub,
        store,
        router,
        clock=lambda: factories.FIXED_TIME,
        chunk_documents=chunk,
    )
    return pub, store, relay


def _delivered(publisher: InMemoryPublisher) -> list[tuple[str, str]]:
    """(session, message id) of every message a consumer receives, in order."""
    return [(str(m.session_id), m.message_id) for m in publisher.delivered["integration-events"]]


def _batch() -> list[dict[str, Any]]:
    """A copy of the same nine changes every time (``_CHANGES``)."""
    return copy.deepcopy(_CHANGES)


def _changes() -> list[dict[str, Any]]:
    """Nine changes of four aggregates, interleaved, in change order; o-2's second change is
    invalid (third document: chunk 1 with chunks of three)."""
    bad = factories.order("o-2", status="teleported")
    return [
        factories.placed("o-1", "e-1"),
        factories.placed("o-2", "e-2"),
        bad,
        factories.placed("o-3", "e-3"),
        factories.shipped("o-1", "e-4"),
        factories.shipped("o-2", "e-5"),  # chunk 2: behind o-2's quarantined change
        factories.shipped("o-3", "e-6"),
        factories.shipped("o-1", "e-7"),
        factories.placed("o-4", "e-8"),
    ]


_CHANGES = _changes()


def test_relay_batch_of_several_chunks_publishes_as_one_chunk_would() -> None:
    whole_publisher, whole_quarantine, whole = _relay(chunk=100)
    whole_outcome = whole.process(_batch())
    publisher, quarantine, chunked = _relay(chunk=3)

    outcome = chunked.process(_batch())

    assert _delivered(publisher) == _delivered(whole_publisher)
    assert {r.document_id: r.reason for r in quarantine.records.values()} == {
        "o-2": QuarantineReason.INVALID_DOCUMENT,
        "e-5": BLOCKED,
    }
    assert quarantine.records.keys() == whole_quarantine.records.keys()
    assert (outcome.published, outcome.quarantined, outcome.skipped) == (7, 2, 0)
    assert outcome.published == whole_outcome.published
    assert outcome.sends == 3  # one send per chunk here (the whole batch needs one)
    assert set(quarantine.parks) == {(FEED, "o-2")}


def test_relay_aggregate_quarantined_in_one_chunk_is_held_back_in_every_later_chunk() -> None:
    publisher, quarantine, relay = _relay(chunk=1)
    batch = [
        factories.order("o-1", status="teleported"),
        factories.placed("o-2", "e-1"),
        factories.shipped("o-1", "e-2"),
        factories.shipped("o-1", "e-3"),
    ]

    relay.process(batch)

    assert _delivered(publisher) == [("o-2", factories.outbox_id("o-2", "e-1"))]
    assert {r.document_id: r.reason for r in quarantine.records.values()} == {
        "o-1": QuarantineReason.INVALID_DOCUMENT,
        "e-2": BLOCKED,
        "e-3": BLOCKED,
    }


def test_relay_failure_in_the_second_chunk_then_retry_loses_nothing_and_duplicates_nothing() -> (
    None
):
    publisher = InMemoryPublisher(["integration-events", "payments"])
    publisher, quarantine, relay = _relay(chunk=3, publisher=publisher)
    whole_publisher, _, whole = _relay(chunk=100)
    whole.process(_batch())
    publisher.fail_on_send(2)  # the second chunk's send

    with pytest.raises(PublishUnavailableError) as raised:
        relay.process(_batch())
    assert is_transient(raised.value)
    sent_before_the_failure = _delivered(publisher)
    assert sent_before_the_failure == [
        ("o-1", factories.outbox_id("o-1", "e-1")),
        ("o-2", factories.outbox_id("o-2", "e-2")),
    ]
    assert quarantine.parks == {}  # a batch that did not finish parks nothing

    outcome = relay.process(_batch())  # the host redelivers the same batch

    delivered = _delivered(publisher)
    assert delivered == _delivered(whole_publisher)  # nothing lost, order kept
    assert len({message_id for _, message_id in delivered}) == len(delivered)
    assert publisher.duplicates == len(sent_before_the_failure)  # dropped by the broker
    assert outcome.published == 7
    assert set(quarantine.parks) == {(FEED, "o-2")}
    for session in ("o-1", "o-3"):
        ids = [message_id for s, message_id in delivered if s == session]
        assert ids == [message_id for s, message_id in _delivered(whole_publisher) if s == session]


def test_relay_checks_parked_aggregates_once_per_batch_whatever_its_chunks() -> None:
    _, quarantine, relay = _relay(chunk=2)

    relay.process(_batch())

    assert quarantine.parked_queries == 1


def test_relay_chunk_of_less_than_one_document_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_documents"):
        _relay(chunk=0)
