"""Versioned public payloads of integration events, and their JSON Schemas.

Only fields declared on a contract leave the database: mapping validates a document's data
against its contract and serialises the validated model, so unknown fields are dropped.

This deployment's contracts live one module per domain (``orders``, ``payments``: the worked
example) and are registered here, explicitly: importing a module registers nothing.
"""

from events.core.contracts import ContractRegistry, EventPayload
from events.deployment.contracts.orders import (
    OrderDeletedV1,
    OrderPlacedV1,
    OrderShippedV1,
    OrderUpsertedV1,
)
from events.deployment.contracts.payments import PaymentAuthorizedV1, PaymentCapturedV1

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


def default_registry() -> ContractRegistry:
    """Every contract this deployment publishes. Add yours here."""
    return ContractRegistry(
        OrderPlacedV1,
        OrderShippedV1,
        OrderUpsertedV1,
        OrderDeletedV1,
        PaymentAuthorizedV1,
        PaymentCapturedV1,
    )
