"""A change-feed batch through the relay with in-memory Service Bus and quarantine."""

from __future__ import annotations

import logging

import pytest

from events.core.messages import Router
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine, QuarantineReason, QuarantineRecord
from events.core.relay import Relay
from events.errors import PublishUnavailableError, StoreUnavailableError, is_transient
from tests import factories


def _relay(
    publisher: InMemoryPublisher | None = None,
) -> tuple[InMemoryPublisher, InMemoryQuarantine, Relay]:
    pub = publisher or InMemoryPublisher(["integration-events", "payments"])
    store = InMemoryQuarantine()
    return pub, store, factories.orders_relay(pub, store)


def _ids(publisher: InMemoryPublisher, destination: str = "integration-events") -> list[str]:
    return [m.message_id for m in publisher.delivered[destination]]


def test_relay_mixed_outbox_and_cdc_batch_publishes_every_event_in_order() -> None:
    publisher, quarantine, relay = _relay()
    batch = [
        factories.placed("o-1", "e-1"),
        factories.order("o-1"),
        factories.shipped("o-1", "e-2"),
    ]

    outcome = relay.process(batch)

    delivered = publisher.delivered["integration-events"]
    assert [m.subject for m in delivered] == ["OrderPlaced", "OrderUpserted", "OrderShipped"]
    assert delivered[0].message_id == factories.outbox_id("o-1", "e-1")
    assert delivered[2].message_id == factories.outbox_id("o-1", "e-2")
    assert {m.session_id for m in delivered} == {"o-1"}
    assert (outcome.published, outcome.quarantined, outcome.sends) == (3, 0, 1)
    assert quarantine.records == {}


def test_relay_failure_on_second_of_three_sends_raises_and_retry_adds_no_duplicate() -> None:
    # Batches of at most one message: three events need three sends.
    publisher = InMemoryPublisher(["integration-events"], max_batch_size=1)
    publisher.fail_on_send(2)
    _, _, relay = _relay(publisher)
    batch = [
        factories.placed("o-1", "e-1"),
        factories.placed("o-2", "e-2"),
        factories.placed("o-3", "e-3"),
    ]

    with pytest.raises(PublishUnavailableError) as raised:
        relay.process(batch)
    assert is_transient(raised.value)
    assert _ids(publisher) == [factories.outbox_id("o-1", "e-1")]

    relay.process(batch)  # the host redelivers the same batch

    assert _ids(publisher) == [factories.outbox_id(f"o-{n}", f"e-{n}") for n in (1, 2, 3)]
    assert publisher.duplicates == 1


def test_relay_invalid_document_is_quarantined_and_the_rest_published() -> None:
    publisher, quarantine, relay = _relay()
    bad = factories.placed("o-2", "e-bad")
    bad["time"] = "not a time"
    batch = [factories.placed("o-1", "e-1"), bad, factories.placed("o-3", "e-3")]

    outcome = relay.process(batch)

    assert _ids(publisher) == [factories.outbox_id("o-1", "e-1"), factories.outbox_id("o-3", "e-3")]
    [record] = quarantine.records.values()
    assert record.reason is QuarantineReason.INVALID_DOCUMENT
    assert record.document_id == "e-bad"
    assert record.partition_key == "o-2"
    assert record.lsn == bad["_lsn"]
    assert record.document == bad
    assert "time" in record.error
    assert outcome.quarantined == 1


def test_relay_oversized_event_is_quarantined_and_the_rest_published() -> None:
    publisher = InMemoryPublisher(["integration-events"], max_message_size=2048)
    _, quarantine, relay = _relay(publisher)
    huge = factories.shipped("o-2", "e-huge", carrier="x" * 5000)
    batch = [factories.placed("o-1", "e-1"), huge, factories.placed("o-3", "e-3")]

    relay.process(batch)

    assert _ids(publisher) == [factories.outbox_id("o-1", "e-1"), factories.outbox_id("o-3", "e-3")]
    [record] = quarantine.records.values()
    assert record.reason is QuarantineReason.EVENT_TOO_LARGE


def test_relay_later_changes_of_a_quarantined_aggregate_are_quarantined_behind_it() -> None:
    publisher, quarantine, relay = _relay()
    bad = factories.order("o-1", status="teleported")
    batch = [
        factories.placed("o-1", "e-1"),
        bad,
        factories.shipped("o-1", "e-2"),
        factories.placed("o-2", "e-3"),
    ]

    relay.process(batch)

    assert _ids(publisher) == [factories.outbox_id("o-1", "e-1"), factories.outbox_id("o-2", "e-3")]
    reasons = sorted(r.reason.value for r in quarantine.records.values())
    assert reasons == ["blocked-behind-quarantined-change", "invalid-document"]


def test_relay_keeps_change_feed_order_per_aggregate_across_interleaved_aggregates() -> None:
    publisher, _, relay = _relay()
    batch = []
    for n in range(10):
        for aggregate in ("a", "b", "c"):
            batch.append(factories.order(aggregate, totalCents=n))

    relay.process(batch)

    for aggregate in ("a", "b", "c"):
        totals = [
            m.body for m in publisher.delivered["integration-events"] if m.session_id == aggregate
        ]
        assert [b'totalCents":%d' % n in body for n, body in enumerate(totals)] == [True] * 10


def test_relay_routes_configured_event_types_to_their_queue() -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    runtime, _, _ = factories.in_memory_runtime(publisher)
    batch = [
        factories.stream_event("p-1", 1, "PaymentAuthorized"),
        factories.stream_event("p-1", 2, "PaymentCaptured"),
        factories.stream_event("p-1", 3, "PaymentRiskScored"),
    ]

    outcome = runtime.relay("relay_eventstore").process(batch)

    assert [m.subject for m in publisher.delivered["integration-events"]] == ["PaymentAuthorized"]
    assert [m.subject for m in publisher.delivered["payments"]] == ["PaymentCaptured"]
    assert (outcome.published, outcome.skipped) == (2, 1)  # the private event is skipped


def test_relay_unclaimed_documents_are_skipped_not_quarantined() -> None:
    publisher, quarantine, relay = _relay()

    outcome = relay.process([{"id": "x", "partitionKey": "x", "type": "Invoice", "_lsn": 1}])

    assert (outcome.skipped, outcome.quarantined, outcome.published) == (1, 0, 0)
    assert publisher.sends == 0
    assert quarantine.records == {}


def test_relay_quarantine_store_down_raises_transient_and_publishes_nothing() -> None:
    class DownQuarantine(InMemoryQuarantine):
        def put(self, record: QuarantineRecord) -> None:
            raise StoreUnavailableError("quarantine write: Cosmos DB answered 503")

    publisher = InMemoryPublisher(["integration-events"])
    relay = Relay(
        factories.feed(),
        publisher,
        DownQuarantine(),
        Router(default="integration-events"),
    )
    bad = factories.placed("o-2", "e-bad")
    bad["subject"] = None

    with pytest.raises(StoreUnavailableError):
        relay.process([factories.placed("o-1", "e-1"), bad])
    assert publisher.sends == 0


def test_relay_logs_one_info_line_per_batch_and_no_document_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, relay = _relay()
    secret = factories.order("o-1", status="teleported", customerEmail="secret@example.com")
    caplog.set_level(logging.DEBUG, logger="events")

    relay.process([factories.placed("o-2", "e-1"), secret])

    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(infos) == 1
    assert "published=1 quarantined=1" in infos[0].getMessage()
    assert len(warnings) == 1
    assert warnings[0].__dict__["document_id"] == "o-1"
    assert all("secret@example.com" not in r.getMessage() for r in caplog.records)
    assert all("secret@example.com" not in str(r.__dict__) for r in caplog.records)
