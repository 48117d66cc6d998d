"""Order events: OrderPlaced / OrderShipped (outbox) and OrderUpserted / OrderDeleted (CDC)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from events.core.contracts import EventPayload

__all__ = ["OrderDeletedV1", "OrderPlacedV1", "OrderShippedV1", "OrderUpsertedV1"]

OrderStatus = Literal["placed", "paid", "shipped", "cancelled"]


class OrderPlacedV1(EventPayload):
    event_type = "OrderPlaced"
    version = 1

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    line_count: int = Field(ge=1)


class OrderShippedV1(EventPayload):
    event_type = "OrderShipped"
    version = 1

    order_id: str = Field(min_length=1)
    carrier: str = Field(min_length=1)
    tracking_number: str | None = None


class OrderUpsertedV1(EventPayload):
    """Change data capture of an Order document: only these fields are ever published."""

    event_type = "OrderUpserted"
    version = 1

    order_id: str = Field(min_length=1)
    status: OrderStatus
    customer_id: str = Field(min_length=1)
    total_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class OrderDeletedV1(EventPayload):
    event_type = "OrderDeleted"
    version = 1

    order_id: str = Field(min_length=1)
