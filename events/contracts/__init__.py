"""Versioned public payloads of integration events, and their JSON Schemas.

Only fields declared on a contract leave the database: mapping validates a document's data
against its contract and serialises the validated model, so unknown fields are dropped.
"""

from events.contracts.base import ContractRegistry, EventPayload, default_registry
from events.contracts.orders import (
    OrderDeletedV1,
    OrderPlacedV1,
    OrderShippedV1,
    OrderUpsertedV1,
)
from events.contracts.payments import PaymentAuthorizedV1, PaymentCapturedV1

__all__ = [
    "ContractRegistry",
    "EventPayload",
    "OrderDeletedV1",
    "OrderPlacedV1",
    "OrderShippedV1",
    "OrderUpsertedV1",
    "PaymentAuthorizedV1",
    "PaymentCapturedV1",
    "default_registry",
]
