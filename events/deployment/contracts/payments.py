"""Public payment events, published from the event-sourced Payment streams."""

from __future__ import annotations

from pydantic import Field

from events.core.contracts import EventPayload

__all__ = ["PaymentAuthorizedV1", "PaymentCapturedV1"]


class PaymentAuthorizedV1(EventPayload):
    event_type = "PaymentAuthorized"
    version = 1

    payment_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class PaymentCapturedV1(EventPayload):
    event_type = "PaymentCaptured"
    version = 1

    payment_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=0)
