"""What the broker keeps of a message: its encoded bytes plus the fields routing needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["MessageFacts", "StoredMessage"]


@dataclass(frozen=True)
class MessageFacts:
    """The fields filters, sessions and duplicate detection look at (decoded once on arrival)."""

    message_id: str | None = None
    session_id: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    to: str | None = None
    reply_to: str | None = None
    properties: Mapping[str, object] = field(default_factory=dict)
    ttl_seconds: float | None = None
    size: int = 0
    scheduled_enqueue_time: float | None = None  # epoch seconds, from the annotation


@dataclass
class StoredMessage:
    """One message in one queue, subscription or dead-letter queue.

    ``raw`` is the message exactly as the sender encoded it; the broker adds its annotations,
    the delivery count and dead-letter properties when it delivers a copy.
    """

    raw: bytes
    facts: MessageFacts
    sequence_number: int
    enqueued_at: float
    expires_at: float | None
    delivery_count: int = 0
    extra_properties: dict[str, str] = field(default_factory=dict)
    dead_letter_source: str | None = None
    deferred: bool = False
    hops: int = 0  # times auto-forwarded before it landed here
