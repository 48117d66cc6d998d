"""The demo writer: places, pays and ships orders as an application would."""

from __future__ import annotations

import random
import threading

from azure.cosmos import DatabaseProxy

from devstack.demo.ledger import Ledger
from events.adapters.cosmos.eventstore import EventStore, NewEvent
from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
from events.core.sources.eventstore import eventstore_event_id
from events.deployment.contracts import OrderPlacedV1, OrderShippedV1

__all__ = ["Writer"]


class Writer:
    """Places, pays and ships orders at a steady pace, like an application would."""

    def __init__(self, database: DatabaseProxy, ledger: Ledger, rate: float, seed: int) -> None:
        self._outbox = OutboxWriter(database.get_container_client("orders"))
        self._streams = EventStore(database.get_container_client("eventstore"))
        self._ledger = ledger
        self._interval = 1.0 / rate
        self._random = random.Random(seed)
        self._orders: dict[str, str] = {}
        self._next = 1

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            self.step()

    def step(self) -> None:
        open_orders = [o for o, s in self._orders.items() if s != "shipped"]
        if not open_orders or self._random.random() < 0.4:
            self._place()
        else:
            order_id = self._random.choice(open_orders)
            if self._orders[order_id] == "placed":
                self._pay(order_id)
            else:
                self._ship(order_id)

    def _entity(self, order_id: str, status: str, total: int) -> dict[str, object]:
        return {
            "id": order_id,
            "partitionKey": order_id,
            "type": "Order",
            "status": status,
            "customerId": f"customer-{self._random.randint(1, 9)}",
            "totalCents": total,
            "currency": "EUR",
            "customerEmail": "never-published@example.com",
        }

    def _place(self) -> None:
        order_id = f"order-{self._next}"
        self._next += 1
        total = self._random.randint(500, 50_000)
        placed = OrderPlacedV1(
            order_id=order_id,
            customer_id="customer-1",
            total_cents=total,
            currency="EUR",
            line_count=self._random.randint(1, 5),
        )
        ids = self._outbox.save(
            self._entity(order_id, "placed", total), [OutboxEvent(placed, subject=order_id)]
        )
        self._orders[order_id] = "placed"
        self._ledger.wrote(ids, order_id, "placed")

    def _pay(self, order_id: str) -> None:
        stream = f"payment-{order_id}"
        data = {"paymentId": stream, "orderId": order_id, "amountCents": 1000, "currency": "EUR"}
        version = self._streams.append(
            stream,
            0,
            [
                NewEvent("PaymentAuthorized", data),
                NewEvent("PaymentRiskScored", {"score": self._random.random()}),  # private
                NewEvent("PaymentCaptured", data),
            ],
        )
        public = [eventstore_event_id("eventstore", stream, v) for v in (1, version)]
        self._outbox.save(self._entity(order_id, "paid", 1000), [])  # CDC only
        self._orders[order_id] = "paid"
        self._ledger.wrote(public, order_id, "paid")

    def _ship(self, order_id: str) -> None:
        shipped = OrderShippedV1(order_id=order_id, carrier="DHL", tracking_number=None)
        ids = self._outbox.save(
            self._entity(order_id, "shipped", 1000), [OutboxEvent(shipped, subject=order_id)]
        )
        self._orders[order_id] = "shipped"
        self._ledger.wrote(ids, order_id, "shipped")
