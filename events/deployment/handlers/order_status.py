"""The order-status projection: one document per order with its latest status.

Declared as the consumer ``order-status`` of the subscription ``integration-events/order-status``
(order events only). The document's id is the order id, in the order's partition; it keeps the
``sequence`` of the event it reflects, so an older event arriving after a newer one (a
redelivery, a replay) changes nothing.
"""

from __future__ import annotations

from typing import Any, Final

from events.core.envelope import IntegrationEvent
from events.core.handling import Documents

__all__ = ["STATUS_BY_TYPE", "handle"]

#: Event types whose status is fixed by the type; ``OrderUpserted`` carries its own.
STATUS_BY_TYPE: Final = {
    "OrderPlaced": "placed",
    "OrderShipped": "shipped",
    "OrderDeleted": "deleted",
}


def _status(event: IntegrationEvent) -> str | None:
    if event.type == "OrderUpserted":
        status = event.data.get("status")
        return status if isinstance(status, str) else None
    return STATUS_BY_TYPE.get(event.type)


def _is_older(event: IntegrationEvent, current: dict[str, Any]) -> bool:
    seen = current.get("sequence")
    # Sequences are zero-padded decimals: text order is number order (decisions.md, 7).
    return isinstance(seen, str) and event.sequence is not None and event.sequence < seen


def handle(event: IntegrationEvent, documents: Documents) -> None:
    """Project an order event onto the order's status document."""
    status = _status(event)
    order_id = event.data.get("orderId")
    if status is None or not isinstance(order_id, str):
        return  # not an order-status event (the subscription's rules should not let it in)
    current = documents.read(order_id)
    if current is not None and _is_older(event, current):
        return
    documents.upsert(
        {
            "id": order_id,
            "status": status,
            "eventId": event.id,
            "eventType": event.type,
            "sequence": event.sequence,
            "time": event.time.isoformat(),
        }
    )
