"""The publishing port: what the relay needs from a message broker, and an in-memory broker.

``InMemoryPublisher`` behaves like a Service Bus namespace with duplicate detection: it is a
real backend for unit and functional tests and shares the contract tests with the Service Bus
adapter (tests/contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from events.core.messages import OutgoingMessage
from events.core.telemetry import send_span
from events.errors import EventTooLargeError, PublishUnavailableError
from events.fencing import check_fence

__all__ = ["InMemoryPublisher", "Publisher", "group_by_destination"]

# Per-message overhead the AMQP encoding adds on top of body and properties (headers,
# section descriptors); a conservative estimate keeps the fake stricter than the broker.
_ENVELOPE_OVERHEAD = 64


class Publisher(Protocol):
    def check(self, message: OutgoingMessage) -> OutgoingMessage:
        """Raise EventTooLargeError if the destination can never accept this message.

        Returns the message (equal to the argument) carrying what the check measured in
        ``encoding``: publish the returned message, and the size measured here is the size
        packed there (a message is built and encoded once). No network unless the
        destination's limit is not known yet; a failure to learn it is a TransientError.
        """
        ...

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        """Send all messages in order, in as few sends as fit; return the number of sends.

        Messages returned by ``check`` are packed with their measured encoding; others are
        measured here.

        Returns only when every message is accepted; raises TransientError otherwise (some
        messages may have been sent: duplicate detection drops them on the retry).

        Calls ``events.fencing.check_fence`` immediately before each send, on the thread that
        sends: a FencedError from it passes through unchanged, and that send and every later
        one of the call do not happen.
        """
        ...


def group_by_destination(
    messages: Iterable[OutgoingMessage],
) -> dict[str, list[OutgoingMessage]]:
    """Messages per destination, each list in the original order."""
    groups: dict[str, list[OutgoingMessage]] = {}
    for message in messages:
        groups.setdefault(message.destination, []).append(message)
    return groups


def encoded_size(message: OutgoingMessage) -> int:
    props = sum(len(k) + len(v) for k, v in message.application_properties.items())
    ids = len(message.message_id) + len(message.session_id) + len(message.subject)
    return len(message.body) + props + ids + len(message.content_type) + _ENVELOPE_OVERHEAD


@dataclass(frozen=True)
class _Measured:
    """The in-memory publisher's measurement of a message."""

    size: int


def _size_of(message: OutgoingMessage) -> int:
    measured = message.encoding
    return measured.size if isinstance(measured, _Measured) else encoded_size(message)


class InMemoryPublisher:
    """Destinations with duplicate detection, batch limits and injectable send failures."""

    def __init__(
        self,
        destinations: Iterable[str],
        *,
        max_message_size: int = 256 * 1024,
        max_batch_size: int = 256 * 1024,
    ) -> None:
        self.delivered: dict[str, list[OutgoingMessage]] = {d: [] for d in destinations}
        self.max_message_size = max_message_size
        self.max_batch_size = max_batch_size
        self.sends = 0
        self.duplicates = 0
        self._seen: dict[str, set[str]] = {d: set() for d in self.delivered}
        self._fail_on_sends: set[int] = set()

    def fail_on_send(self, *ordinals: int) -> None:
        """Make the n-th future send attempts (1-based, counted from now) fail transiently."""
        self._fail_on_sends.update(self.sends + n for n in ordinals)

    def check(self, message: OutgoingMessage) -> OutgoingMessage:
        self._known(message.destination)
        size = _size_of(message)
        if size > self.max_message_size:
            raise EventTooLargeError(
                f"message {message.message_id} is {size} bytes, "
                f"{message.destination} accepts {self.max_message_size}",
                resource=message.destination,
                ids={"message": message.message_id},
                size=size,
                limit=self.max_message_size,
            )
        return message.measured(_Measured(size))

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        sends = 0
        for destination, group in group_by_destination(messages).items():
            self._known(destination)
            batch: list[OutgoingMessage] = []
            used = 0
            for message in group:
                size = _size_of(self.check(message))
                if batch and used + size > self.max_batch_size:
                    self._send(destination, batch)
                    sends += 1
                    batch, used = [], 0
                batch.append(message)
                used += size
            if batch:
                self._send(destination, batch)
                sends += 1
        return sends

    def _known(self, destination: str) -> None:
        if destination not in self.delivered:
            raise PublishUnavailableError(f"no topic or queue named {destination!r}")

    def _send(self, destination: str, batch: list[OutgoingMessage]) -> None:
        with send_span(destination, batch):
            self._deliver(destination, batch)

    def _deliver(self, destination: str, batch: list[OutgoingMessage]) -> None:
        check_fence()
        attempt = self.sends + 1
        if attempt in self._fail_on_sends:
            self._fail_on_sends.discard(attempt)
            self.sends += 1
            raise PublishUnavailableError(f"injected failure on send {attempt}")
        self.sends += 1
        seen = self._seen[destination]
        for message in batch:
            if message.message_id in seen:
                self.duplicates += 1
                continue
            seen.add(message.message_id)
            self.delivered[destination].append(message)
