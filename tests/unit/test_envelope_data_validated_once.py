"""The event data is validated once: by its contract when a source maps a document, by the
envelope when the data comes from anywhere else (a received message, a caller)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from events.core.envelope import IntegrationEvent
from events.deployment.contracts import OrderPlacedV1

_RAW = {"orderId": "order-1", "customerId": "c-1", "totalCents": 1234, "currency": "EUR"}


def _event(data: Any) -> IntegrationEvent:
    return IntegrationEvent(
        id="evt-1",
        source="urn:test",
        type="OrderPlaced",
        subject="order-1",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        data=data,
        partitionkey="order-1",
    )


def test_envelope_data_a_contract_produced_is_taken_as_is() -> None:
    data = OrderPlacedV1.public_data({**_RAW, "lineCount": 2, "secret": "never copied"})

    event = _event(data)

    assert event.data is data
    assert event.data == {**_RAW, "lineCount": 2}


@pytest.mark.parametrize("data", [["not", "a", "mapping"], {1: "key not text"}, "text"])
def test_envelope_data_from_elsewhere_is_still_validated(data: Any) -> None:
    with pytest.raises(ValidationError):
        _event(data)


def test_envelope_attributes_are_still_checked_with_contract_data() -> None:
    data = OrderPlacedV1.public_data({**_RAW, "lineCount": 2})

    with pytest.raises(ValidationError):
        IntegrationEvent(
            id="",
            source="urn:test",
            type="OrderPlaced",
            subject="order-1",
            time=datetime(2026, 1, 1, tzinfo=UTC),
            data=data,
            partitionkey="order-1",
            traceparent="not-a-traceparent",
        )
