"""Mapping of outbox, CDC and event-store documents into integration events."""

from __future__ import annotations

import random

import pytest

from events.core.documents import SYSTEM_FIELDS
from events.core.envelope import sequence_of
from events.core.sources import CdcRule, CdcSource, EventStoreSource, OutboxSource, SourceContext
from events.core.sources.cdc import cdc_event_id
from events.core.sources.eventstore import eventstore_event_id
from events.deployment.contracts import OrderPlacedV1, OrderUpsertedV1, default_registry
from events.errors import InvalidDocumentError, MappingError
from tests import factories
from tests.factories import ORDER_CDC

CONTEXT = SourceContext(
    source_uri="/integration-relay/relay/orders", container="orders", contracts=default_registry()
)


def test_outbox_event_document_becomes_event_with_its_own_id_and_every_attribute() -> None:
    document = factories.placed(event_id="evt-42")

    [event] = OutboxSource().to_events(document, "order-1", CONTEXT)

    assert event.id == factories.outbox_id("order-1", "evt-42")
    assert event.type == "OrderPlaced"
    assert event.subject == "order-1"
    assert event.source == "/integration-relay/relay/orders"
    assert event.time == factories.FIXED_TIME
    assert event.dataschema == OrderPlacedV1.schema_uri()
    assert event.traceparent == factories.TRACEPARENT
    assert event.partitionkey == "order-1"
    assert event.sequence == sequence_of(document["_lsn"])
    assert event.data == {
        "orderId": "order-1",
        "customerId": "cust-9",
        "totalCents": 4200,
        "currency": "EUR",
        "lineCount": 2,
    }


def test_outbox_data_with_fields_outside_the_contract_publishes_only_contract_fields() -> None:
    document = factories.placed(internalNote="do not leak")

    [event] = OutboxSource().to_events(document, "order-1", CONTEXT)

    assert "internalNote" not in event.data


def test_outbox_unknown_event_type_is_unmappable() -> None:
    document = factories.placed()
    document["eventType"] = "OrderTeleported"

    with pytest.raises(MappingError, match="no contract"):
        OutboxSource().to_events(document, "order-1", CONTEXT)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subject", None, "subject"),
        ("time", "yesterday", "ISO 8601"),
        ("time", "2026-01-01T00:00:00", "time zone"),
        ("data", "not an object", "data"),
        ("eventVersion", "1", "eventVersion"),
    ],
)
def test_outbox_document_with_bad_field_is_invalid(field: str, value: object, message: str) -> None:
    document = factories.placed()
    document[field] = value

    with pytest.raises(InvalidDocumentError, match=message):
        OutboxSource().to_events(document, "order-1", CONTEXT)


def test_outbox_data_violating_contract_names_the_field_not_the_value() -> None:
    document = factories.placed(totalCents=-5)

    with pytest.raises(InvalidDocumentError) as raised:
        OutboxSource().to_events(document, "order-1", CONTEXT)

    assert "totalCents" in str(raised.value)
    assert "-5" not in str(raised.value)


def test_cdc_entity_becomes_upserted_with_only_allow_listed_fields() -> None:
    document = factories.order(status="paid")

    [event] = CdcSource([ORDER_CDC]).to_events(document, "order-1", CONTEXT)

    assert event.type == "OrderUpserted"
    assert event.subject == "order-1"
    assert event.dataschema == OrderUpsertedV1.schema_uri()
    assert event.data == {
        "orderId": "order-1",
        "status": "paid",
        "customerId": "cust-9",
        "totalCents": 4200,
        "currency": "EUR",
    }
    assert not SYSTEM_FIELDS & set(event.data)
    assert "shippingAddress" not in event.data
    assert "customerEmail" not in event.data


def test_cdc_id_derives_from_container_partition_document_and_lsn() -> None:
    first = factories.order()
    again = dict(first)
    later = factories.order()
    source = CdcSource([ORDER_CDC])

    [a] = source.to_events(first, "order-1", CONTEXT)
    [b] = source.to_events(again, "order-1", CONTEXT)
    [c] = source.to_events(later, "order-1", CONTEXT)

    assert a.id == b.id == cdc_event_id("orders", "order-1", "order-1", first["_lsn"])
    assert c.id != a.id
    assert (a.sequence or "") < (c.sequence or "")


def test_cdc_soft_deleted_entity_becomes_deleted_event_with_only_its_id() -> None:
    document = factories.order(deleted=True, ttl=60)

    [event] = CdcSource([ORDER_CDC]).to_events(document, "order-1", CONTEXT)

    assert event.type == "OrderDeleted"
    assert event.data == {"orderId": "order-1"}


def test_cdc_entity_with_invalid_allowed_field_is_invalid() -> None:
    document = factories.order(status="teleported")

    with pytest.raises(InvalidDocumentError, match="status"):
        CdcSource([ORDER_CDC]).to_events(document, "order-1", CONTEXT)


def test_cdc_rule_allowing_a_system_field_is_refused() -> None:
    with pytest.raises(ValueError, match="system fields"):
        CdcRule(
            document_type="Order",
            upserted=OrderUpsertedV1,
            deleted=OrderUpsertedV1,
            id_field="orderId",
            fields=("status", "_etag"),
        )


def test_cdc_rule_allowing_a_field_missing_from_the_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="shippingAddress"):
        CdcRule(
            document_type="Order",
            upserted=OrderUpsertedV1,
            deleted=OrderUpsertedV1,
            id_field="orderId",
            fields=("status", "shippingAddress"),
        )


def test_cdc_ignores_documents_of_types_without_a_rule() -> None:
    assert not CdcSource([ORDER_CDC]).claims({"id": "x", "type": "Invoice"})
    assert not CdcSource([ORDER_CDC]).claims(factories.placed())


def test_eventstore_public_event_published_with_version_as_sequence_and_stream_id() -> None:
    document = factories.stream_event(version=3)

    [event] = EventStoreSource().to_events(document, "payment-7", CONTEXT)

    assert event.id == eventstore_event_id("orders", "payment-7", 3)
    assert event.sequence == sequence_of(3)
    assert event.subject == "payment-7"
    assert event.partitionkey == "payment-7"
    assert event.type == "PaymentAuthorized"
    assert event.data == {
        "paymentId": "payment-7",
        "orderId": "order-1",
        "amountCents": 4200,
        "currency": "EUR",
    }


def test_eventstore_private_event_type_publishes_nothing() -> None:
    document = factories.stream_event(event_type="PaymentRiskScored")

    assert EventStoreSource().to_events(document, "payment-7", CONTEXT) == []


def test_eventstore_document_without_version_is_invalid() -> None:
    document = factories.stream_event()
    del document["version"]

    with pytest.raises(InvalidDocumentError, match="version"):
        EventStoreSource().to_events(document, "payment-7", CONTEXT)


def test_catalog_feeds_source_uri_names_database_and_container() -> None:
    feed = factories.feed("relay_eventstore")

    assert feed.source_uri == "/integration-relay/relay/eventstore"
    assert feed.partition_key_path == "/streamId"


def test_cdc_no_unlisted_field_appears_in_any_event_whatever_the_document_holds() -> None:
    rng = random.Random(5)
    allowed = {*ORDER_CDC.fields, ORDER_CDC.id_field}
    source = CdcSource([ORDER_CDC])
    for n in range(200):
        extra = {
            f"field{rng.randint(0, 10**6)}": rng.choice([1, "x", None, {"nested": "secret"}, [1]])
            for _ in range(rng.randint(0, 8))
        }
        document = factories.order(f"order-{n}", deleted=rng.random() < 0.2, **extra)

        [event] = source.to_events(document, f"order-{n}", CONTEXT)

        assert set(event.data) <= allowed
        assert not SYSTEM_FIELDS & set(event.data)
