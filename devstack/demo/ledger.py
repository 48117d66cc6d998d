"""What the demo writer wrote and what the consumer received, shared by both and the printer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from events.envelope import IntegrationEvent

__all__ = ["Ledger"]


@dataclass
class Ledger:
    """What was written and what arrived; shared by the writer, consumers and the printer."""

    expected: set[str] = field(default_factory=set)
    final_status: dict[str, str] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    received_status: dict[str, str] = field(default_factory=dict)
    #: Sequences in arrival order per (destination, aggregate): Service Bus keeps order per
    #: session within one entity; events routed to different entities have no common order.
    order_by_aggregate: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrote(self, event_ids: list[str], order_id: str, status: str) -> None:
        with self.lock:
            self.expected.update(event_ids)
            self.final_status[order_id] = status

    def got(self, event: IntegrationEvent, destination: str) -> None:
        with self.lock:
            self.received.add(event.id)
            key = (destination, event.partitionkey)
            self.order_by_aggregate.setdefault(key, []).append(event.sequence or "")
            if event.type == "OrderUpserted":
                self.received_status[event.subject] = str(event.data.get("status"))

    def duplicate(self) -> None:
        with self.lock:
            self.duplicates += 1

    def missing(self) -> int:
        with self.lock:
            events = len(self.expected - self.received)
            states = sum(
                1
                for order, status in self.final_status.items()
                if self.received_status.get(order) != status
            )
            return events + states

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.expected), len(self.expected & self.received), self.duplicates
