"""Builders of change-feed documents as Cosmos DB delivers them (with system fields)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from events.core.messages import OutgoingMessage, Router
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.core.relay import Feed, Relay
from events.core.sources import CdcRule, outbox_document, stream_event_document
from events.core.sources.outbox import outbox_event_id
from events.deployment.catalog import Deployment, FeedDefinition, load_deployment
from events.deployment.contracts import (
    OrderDeletedV1,
    OrderPlacedV1,
    OrderShippedV1,
    OrderUpsertedV1,
)
from events.deployment.settings import Settings, load_settings
from events.hosts.runtime import Runtime, build_feed

#: The example declaration's CDC rule for Order documents, as the catalog builds it.
ORDER_CDC = CdcRule(
    document_type="Order",
    upserted=OrderUpsertedV1,
    deleted=OrderDeletedV1,
    id_field="orderId",
    fields=("status", "customerId", "totalCents", "currency"),
)
FIXED_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_lsn = itertools.count(100)


def system_fields(lsn: int | None = None) -> dict[str, Any]:
    number = next(_lsn) if lsn is None else lsn
    return {
        "_rid": "rid==",
        "_self": "dbs/x/colls/y/docs/z/",
        "_etag": f'"{number:08x}"',
        "_attachments": "attachments/",
        "_ts": 1767323045,
        "_lsn": number,
    }


def order(order_id: str = "order-1", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": order_id,
        "partitionKey": order_id,
        "type": "Order",
        "status": "placed",
        "customerId": "cust-9",
        "totalCents": 4200,
        "currency": "EUR",
        "shippingAddress": {"street": "1 Private Road"},
        "customerEmail": "someone@example.com",
    }
    document.update(fields)
    document.update(system_fields())
    return document


def outbox_id(order_id: str, event_id: str, container: str = "orders") -> str:
    """The published id of ``placed(order_id, event_id)`` or ``shipped(...)`` in ``container``."""
    return outbox_event_id(container, order_id, event_id)


def placed(order_id: str = "order-1", event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    payload = OrderPlacedV1(
        order_id=order_id, customer_id="cust-9", total_cents=4200, currency="EUR", line_count=2
    )
    document = outbox_document(
        event_id=event_id,
        partition_key_field="partitionKey",
        partition_key=order_id,
        payload=payload,
        subject=order_id,
        time=FIXED_TIME,
        ttl_seconds=864000,
        traceparent=TRACEPARENT,
    )
    document["data"].update(data)
    document.update(system_fields())
    return document


def shipped(
    order_id: str = "order-1", event_id: str = "evt-2", carrier: str = "DHL"
) -> dict[str, Any]:
    document = outbox_document(
        event_id=event_id,
        partition_key_field="partitionKey",
        partition_key=order_id,
        payload=OrderShippedV1(order_id=order_id, carrier=carrier),
        subject=order_id,
        time=FIXED_TIME,
        ttl_seconds=864000,
    )
    document.update(system_fields())
    return document


def stream_event(
    stream_id: str = "payment-7",
    version: int = 1,
    event_type: str = "PaymentAuthorized",
    **data: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "paymentId": stream_id,
        "orderId": "order-1",
        "amountCents": 4200,
        "currency": "EUR",
        "riskScore": 0.12,
    }
    body.update(data)
    document = stream_event_document(
        stream_id=stream_id, version=version, event_type=event_type, data=body, time=FIXED_TIME
    )
    document.update(system_fields())
    return document


LOCAL_ENV = {
    "RELAY_COSMOS": "AccountEndpoint=https://127.0.0.1:8081/;AccountKey=a2V5;",
    "RELAY_SERVICEBUS": "Endpoint=sb://127.0.0.1;SharedAccessKeyName=k;SharedAccessKey=v;"
    "UseDevelopmentEmulator=true;",
}


#: The example declaration, as shipped (infra/topology.json with this deployment's contracts).
DEPLOYMENT: Deployment = load_deployment()


def settings() -> Settings:
    return load_settings(LOCAL_ENV, DEPLOYMENT.topology)


def feed_definition(name: str = "relay_orders") -> FeedDefinition:
    return DEPLOYMENT.feed(name)


def feed(name: str = "relay_orders") -> Feed:
    """The relay's view of a declared feed, with the local settings."""
    return build_feed(feed_definition(name), settings(), DEPLOYMENT)


def in_memory_runtime(
    publisher: InMemoryPublisher | None = None, quarantine: InMemoryQuarantine | None = None
) -> tuple[Runtime, InMemoryPublisher, InMemoryQuarantine]:
    config = settings()
    pub = publisher or InMemoryPublisher(["integration-events", "payments"])
    store = quarantine or InMemoryQuarantine()
    return Runtime.assemble(config, DEPLOYMENT, pub, store), pub, store


def orders_relay(
    publisher: InMemoryPublisher, quarantine: InMemoryQuarantine, clock_time: datetime = FIXED_TIME
) -> Relay:
    config = settings()
    router = Router(default=config.default_destination, routes=config.routes)
    return Relay(feed(), publisher, quarantine, router, clock=lambda: clock_time)


def message(destination: str = "integration-events", message_id: str = "m-1") -> OutgoingMessage:
    """A small Service Bus message description, as the relay builds them."""
    return OutgoingMessage(
        destination=destination,
        message_id=message_id,
        session_id="s-1",
        subject="OrderPlaced",
        content_type="application/json",
        body=b"{}",
        application_properties={"cloudEvents:id": message_id},
    )
