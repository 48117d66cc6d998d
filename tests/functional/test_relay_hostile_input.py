"""Regressions: documents and failures that once stalled a feed or lost an event.

Each test is one trigger a fuzzer or an adversarial tester found; the rule they share is that
mapping one document can only ever quarantine that document, and only I/O is transient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from events.core.messages import OutgoingMessage, Router
from events.core.publisher import InMemoryPublisher, Publisher
from events.core.quarantine import (
    InMemoryQuarantine,
    QuarantineReason,
    QuarantineRecord,
    QuarantineStore,
)
from events.core.relay import Relay
from events.core.sources import Source
from events.errors import PublishUnavailableError, StoreUnavailableError
from tests import factories


def _relay(
    publisher: InMemoryPublisher | None = None, feed: str = "relay_orders"
) -> tuple[InMemoryPublisher, InMemoryQuarantine, Relay]:
    runtime, pub, store = factories.in_memory_runtime(publisher)
    return pub, store, runtime.relay(feed)


def _orders_relay(
    publisher: Publisher, quarantine: QuarantineStore, *extra_sources: Source
) -> Relay:
    """The orders feed's relay with injected ports, and extra sources tried first."""
    config = factories.settings()
    feed = factories.feed()
    feed = replace(feed, sources=(*extra_sources, *feed.sources))
    return Relay(feed, publisher, quarantine, Router(config.default_destination, config.routes))


@pytest.mark.parametrize("bad_type", [["Order"], {"kind": "Order"}])
def test_relay_document_type_list_or_dict_is_skipped_and_the_page_published(
    bad_type: object,
) -> None:
    publisher, _store, relay = _relay()
    odd = factories.order("o-2")
    odd["type"] = bad_type

    outcome = relay.process([factories.placed("o-1", "e-1"), odd, factories.placed("o-3", "e-3")])

    assert (outcome.published, outcome.skipped, outcome.quarantined) == (2, 1, 0)
    assert len(publisher.delivered["integration-events"]) == 2


def test_relay_outbox_time_overflowing_in_utc_is_quarantined_and_the_rest_published() -> None:
    _publisher, store, relay = _relay()
    bad = factories.placed("o-2", "e-2")
    bad["time"] = "0001-01-01T00:00:00+01:00"

    outcome = relay.process([factories.placed("o-1", "e-1"), bad])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    [record] = store.records.values()
    assert record.reason is QuarantineReason.INVALID_DOCUMENT
    assert record.error == "field 'time' is out of range in UTC"


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), 1e20, -1e20])
def test_relay_change_time_nan_or_out_of_range_is_quarantined(ts: float) -> None:
    _publisher, store, relay = _relay()
    bad = factories.order("o-2")
    bad["_ts"] = ts

    outcome = relay.process([bad, factories.order("o-3")])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    [record] = store.records.values()
    assert record.error == "field '_ts' is not a time in range"


def test_relay_id_with_lone_surrogate_is_quarantined_with_a_usable_record_and_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _publisher, store, relay = _relay()
    bad = factories.order("o-2")
    bad["id"] = "order-\ud800"
    caplog.set_level(logging.WARNING, logger="events")

    outcome = relay.process([bad, factories.order("o-3")])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    [record] = store.records.values()
    assert record.error == "field 'id' is not valid Unicode (a lone surrogate)"
    [line] = [r.getMessage() for r in caplog.records]
    assert record.id in line
    assert "\\ud800" in line  # escaped: a document id cannot forge log text


def test_relay_cdc_same_id_and_lsn_in_two_partitions_publishes_two_distinct_events() -> None:
    publisher, _, relay = _relay()
    a = factories.order("order-1", partitionKey="tenant-a")
    b = factories.order("order-1", partitionKey="tenant-b")
    b["_lsn"] = a["_lsn"]

    outcome = relay.process([a, b])

    delivered = publisher.delivered["integration-events"]
    assert outcome.published == 2
    assert len({m.message_id for m in delivered}) == 2
    assert publisher.duplicates == 0


def test_relay_outbox_same_id_in_two_partitions_publishes_two_distinct_events() -> None:
    publisher, _, relay = _relay()

    relay.process([factories.placed("tenant-a", "evt-1"), factories.placed("tenant-b", "evt-1")])

    assert len({m.message_id for m in publisher.delivered["integration-events"]}) == 2


def test_relay_stream_document_whose_id_breaks_the_convention_is_quarantined() -> None:
    _publisher, store, relay = _relay(feed="relay_eventstore")
    forged = factories.stream_event("p-1", 3)
    forged["id"] = "p-1:forged"

    outcome = relay.process([factories.stream_event("p-2", 1), forged])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    [record] = store.records.values()
    assert "streamId" in record.error


def test_relay_malformed_documents_without_id_or_lsn_get_distinct_quarantine_records() -> None:
    _, store, relay = _relay()
    first: dict[str, Any] = {"partitionKey": "p", "type": "outbox", "note": 1}
    second: dict[str, Any] = {"partitionKey": "p", "type": "outbox", "note": 2}
    no_pk_a: dict[str, Any] = {"type": "outbox", "note": 3}
    no_pk_b: dict[str, Any] = {"type": "outbox", "note": 4}

    outcome = relay.process([first, second, no_pk_a, no_pk_b])

    assert outcome.quarantined == 4
    assert len(store.records) == 4
    relay.process([first])  # the same change again: the same record, not a new one
    assert len(store.records) == 4


@pytest.mark.parametrize("total", [True, "4200", 4200.5, None])
def test_relay_contract_field_of_the_wrong_json_type_is_not_coerced_but_quarantined(
    total: object,
) -> None:
    _publisher, store, relay = _relay()

    outcome = relay.process([factories.placed("o-1", "e-1", totalCents=total)])

    assert (outcome.published, outcome.quarantined) == (0, 1)
    [record] = store.records.values()
    assert "totalCents: int_type" in record.error


def test_relay_private_stream_events_count_as_skipped() -> None:
    _, _, relay = _relay(feed="relay_eventstore")
    private = factories.stream_event("p-1", 1, "PaymentRiskScored")

    outcome = relay.process([private, factories.stream_event("p-1", 2)])

    assert (outcome.documents, outcome.published, outcome.skipped) == (2, 1, 1)


def test_relay_unexpected_error_in_a_source_quarantines_only_that_document() -> None:
    class Exploding:
        kind = "exploding"

        def claims(self, document: object) -> bool:
            return isinstance(document, dict) and document.get("type") == "boom"

        def to_events(self, *_: object) -> list[Any]:
            raise ZeroDivisionError("secret@example.com")

    publisher = InMemoryPublisher(["integration-events", "payments"])
    store = InMemoryQuarantine()
    exploding_relay = _orders_relay(publisher, store, Exploding())
    boom = {"id": "b-1", "partitionKey": "b", "type": "boom", "_lsn": 3}

    outcome = exploding_relay.process([boom, factories.placed("o-1", "e-1")])

    assert (outcome.published, outcome.quarantined) == (1, 1)
    [record] = store.records.values()
    assert record.reason is QuarantineReason.MAPPING_FAILED
    assert record.error_type == "ZeroDivisionError"


def test_relay_quarantine_log_line_names_document_lsn_and_quarantine_id_in_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, store, relay = _relay()
    bad = factories.order("o-7", status="teleported", customerEmail="secret@example.com")
    caplog.set_level(logging.WARNING, logger="events")

    relay.process([bad])

    [record] = store.records.values()
    [line] = [r.getMessage() for r in caplog.records]
    assert f"document_id=o-7 lsn={bad['_lsn']} quarantine_id={record.id}" in line
    assert "reason=invalid-document" in line
    assert "secret@example.com" not in line


def test_relay_quarantine_store_failing_with_any_error_is_reported_as_transient() -> None:
    class BrokenQuarantine(InMemoryQuarantine):
        def put(self, record: QuarantineRecord) -> None:
            raise RuntimeError("driver bug")

    publisher = InMemoryPublisher(["integration-events", "payments"])
    relay = _orders_relay(publisher, BrokenQuarantine())
    bad = factories.order("o-1", status="teleported")

    with pytest.raises(StoreUnavailableError, match="RuntimeError"):
        relay.process([bad, factories.placed("o-2", "e-2")])
    assert publisher.sends == 0


def test_relay_publisher_failing_with_any_error_is_reported_as_transient() -> None:
    class BrokenPublisher(InMemoryPublisher):
        def publish(self, messages: Sequence[OutgoingMessage]) -> int:
            raise RuntimeError("driver bug")

    publisher = BrokenPublisher(["integration-events", "payments"])
    _, _, relay = _relay(publisher)

    with pytest.raises(PublishUnavailableError, match="RuntimeError"):
        relay.process([factories.placed("o-1", "e-1")])


def test_relay_partition_key_longer_than_a_session_id_is_quarantined() -> None:
    _, store, relay = _relay()
    long_key = "k" * 129

    outcome = relay.process([factories.placed(long_key, "e-1")])

    assert outcome.quarantined == 1
    [record] = store.records.values()
    assert "128 characters" in record.error
