"""What the demo writer wrote and what the consumer received, shared by both and the printer.

Two kinds of expectation:

- **events**: the ids the writer's APIs returned (``OutboxWriter.save``) or that
  ``eventstore_event_id`` gives for the public stream events it appended. Each must arrive.
  The ledger never computes an id itself.
- **CDC**: one per order. The latest-version change feed may merge quick updates of an order
  into one change, so not every status an order passed through becomes an ``OrderUpserted``;
  its *final* status always does. An order counts as arrived once an ``OrderUpserted`` with the
  status it was last written with has been received.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from events.core.envelope import IntegrationEvent

__all__ = ["CDC_EVENT_TYPE", "Ledger", "Tally"]

CDC_EVENT_TYPE = "OrderUpserted"


@dataclass(frozen=True)
class Tally:
    """One consistent reading of the ledger."""

    #: Events the writer's APIs returned ids for (outbox events, public stream events).
    written: int
    #: Orders whose final status must arrive as an ``OrderUpserted`` (one per order).
    cdc: int
    #: Of ``written + cdc``: events received, plus orders whose final status was received.
    received: int
    #: Deliveries the idempotent consumer skipped because its inbox had the event id.
    duplicates: int

    @property
    def expected(self) -> int:
        return self.written + self.cdc

    @property
    def missing(self) -> int:
        return self.expected - self.received


@dataclass
class Ledger:
    """What was written and what arrived; shared by the writer, consumers and the printer."""

    expected: set[str] = field(default_factory=set)
    final_status: dict[str, str] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    #: Every status received per order: a redelivered older state must not hide the final one.
    received_statuses: dict[str, set[str]] = field(default_factory=dict)
    #: Sequences in arrival order per (destination, aggregate): Service Bus keeps order per
    #: session within one entity; events routed to different entities have no common order.
    order_by_aggregate: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    duplicates: int = 0
    #: Events handed to the handler so far, CDC included: grows while anything arrives.
    handled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, event_ids: list[str], order_id: str, status: str) -> None:
        with self.lock:
            self.expected.update(event_ids)
            self.final_status[order_id] = status

    def got(self, event: IntegrationEvent, destination: str) -> None:
        with self.lock:
            self.handled += 1
            self.received.add(event.id)
            key = (destination, event.partitionkey)
            self.order_by_aggregate.setdefault(key, []).append(event.sequence or "")
            if event.type == CDC_EVENT_TYPE:
                order = str(event.data.get("orderId", event.subject))
                status = str(event.data.get("status"))
                self.received_statuses.setdefault(order, set()).add(status)

    def duplicate(self) -> None:
        with self.lock:
            self.duplicates += 1

    def tally(self) -> Tally:
        with self.lock:
            events = len(self.expected & self.received)
            states = sum(
                1
                for order, status in self.final_status.items()
                if status in self.received_statuses.get(order, ())
            )
            return Tally(
                written=len(self.expected),
                cdc=len(self.final_status),
                received=events + states,
                duplicates=self.duplicates,
            )

    def missing(self) -> int:
        """Expected events and final order states that have not arrived."""
        return self.tally().missing

    def counts(self) -> tuple[int, int, int]:
        """Written events, those of them received, duplicates (CDC not included)."""
        with self.lock:
            return len(self.expected), len(self.expected & self.received), self.duplicates
