"""The idempotent consumer helper: handle each integration event once per consumer.

Service Bus delivers at least once, and duplicate detection only covers its window, so a
consumer must recognise a redelivered event itself. The inbox records the event ids a
consumer has handled. Order of work: handle, then record. A crash between the two makes the
next delivery run the handler again, so a handler should still be idempotent for its own
side effects; what the inbox removes are the ordinary duplicates (redeliveries, replays,
retries of the relay beyond the window).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from events.core.envelope import IntegrationEvent
from events.core.telemetry import consume_span

__all__ = ["IdempotentConsumer", "InMemoryInbox", "Inbox", "Outcome"]

logger = logging.getLogger(__name__)


class Inbox(Protocol):
    def seen(self, consumer: str, event_id: str) -> bool: ...

    def record(self, consumer: str, event_id: str) -> None:
        """Remember the event id for this consumer; recording twice is harmless."""
        ...


class InMemoryInbox:
    def __init__(self) -> None:
        self._ids: set[tuple[str, str]] = set()

    def seen(self, consumer: str, event_id: str) -> bool:
        return (consumer, event_id) in self._ids

    def record(self, consumer: str, event_id: str) -> None:
        self._ids.add((consumer, event_id))


@dataclass(frozen=True)
class Outcome:
    handled: bool
    duplicate: bool


class IdempotentConsumer:
    def __init__(
        self, name: str, inbox: Inbox, handler: Callable[[IntegrationEvent], None]
    ) -> None:
        self.name = name
        self._inbox = inbox
        self._handler = handler
        self.handled = 0
        self.duplicates = 0

    def handle(self, event: IntegrationEvent) -> Outcome:
        """Run the handler unless this consumer already handled the event id.

        Exceptions of the handler propagate: the caller abandons the message and Service Bus
        redelivers it (and dead-letters it after the max delivery count).
        """
        if self._inbox.seen(self.name, event.id):
            self.duplicates += 1
            logger.info("duplicate skipped consumer=%s", self.name, extra={"event_id": event.id})
            return Outcome(handled=False, duplicate=True)
        with consume_span(self.name, event):
            self._handler(event)
        self._inbox.record(self.name, event.id)
        self.handled += 1
        return Outcome(handled=True, duplicate=False)
