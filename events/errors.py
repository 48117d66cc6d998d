"""Errors raised by the relay, grouped by what the caller must do about them.

    RelayError
    ├── TransientError          retry later: the batch is redelivered, the checkpoint stays
    │   ├── PublishUnavailableError     Service Bus unreachable, busy, timed out or refusing
    │   ├── StoreUnavailableError       Cosmos DB throttled (429) or unavailable (503, 408, ...)
    │   ├── EventInProgressError        another delivery of the event holds a live claim
    │   └── InboxConflictError          a consumer's write lost against a concurrent one (412)
    └── PermanentError          retrying cannot help: quarantine the document or fix the input
        ├── SettingsError               a missing or bad setting or topology file
        ├── MappingError                a document that cannot become an event
        │   └── InvalidDocumentError    the document misses or has bad required fields
        ├── EventTooLargeError          an event bigger than the entity accepts
        ├── OutboxError                 the application-side outbox writer refused or failed
        │   ├── OutboxConflictError         an entity or event with that id already exists (409)
        │   ├── OutboxPreconditionFailedError  the entity changed since it was read (412)
        │   ├── OutboxTooManyOperationsError more than 100 operations in one batch
        │   ├── OutboxTooLargeError         the batch is over 2 MB
        │   └── PartitionKeyMismatchError   an event in another partition than its entity
        ├── ConcurrencyConflictError    an event-store append lost against another writer
        ├── UnreadableMessageError      a received message that is no integration event
        └── InboxError                  a consumer's unit of work cannot be committed
            ├── DuplicateEventError         the consumer handled this event id already
            ├── PayloadMismatchError        a redelivered event id carries another payload
            ├── InboxTooManyOperationsError more than 100 operations in one batch
            └── InboxTooLargeError          the batch is over 2 MB

A receiving loop settles a message by the same question: complete it when handled (or a
duplicate), dead-letter it on a permanent error, abandon it (redelivery) on a transient one.

``is_transient`` is the one question hosts ask: transient errors make the host retry the whole
batch; permanent ones are handled inside the batch (quarantine) or reported to the caller.

Every error carries data besides its message, for callers and structured logs: the ``status``
a service answered, the ``resource`` (endpoint, entity, container) and the ``setting`` or file
at fault, the ``ids`` involved (document, event, lease, stream), and a ``size`` over its
``limit``. SDK errors are translated into this tree in one table per SDK
(``events.adapters.cosmos.errors``, ``events.adapters.servicebus``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "ConcurrencyConflictError",
    "DuplicateEventError",
    "EventInProgressError",
    "EventTooLargeError",
    "InboxConflictError",
    "InboxError",
    "InboxTooLargeError",
    "InboxTooManyOperationsError",
    "InvalidDocumentError",
    "MappingError",
    "OutboxConflictError",
    "OutboxError",
    "OutboxPreconditionFailedError",
    "OutboxTooLargeError",
    "OutboxTooManyOperationsError",
    "PartitionKeyMismatchError",
    "PayloadMismatchError",
    "PermanentError",
    "PublishUnavailableError",
    "RelayError",
    "SettingsError",
    "StoreUnavailableError",
    "TransientError",
    "UnreadableMessageError",
    "is_transient",
]


class RelayError(Exception):
    """Base of every error this package raises on purpose."""

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        resource: str | None = None,
        setting: str | None = None,
        ids: Mapping[str, str] | None = None,
        size: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.resource = resource
        self.setting = setting
        self.ids: Mapping[str, str] = MappingProxyType(dict(ids or {}))
        self.size = size
        self.limit = limit


class TransientError(RelayError):
    """The same operation may succeed later; never quarantine because of it."""

    transient = True


class PermanentError(RelayError):
    """The same input will fail again; retrying only blocks the feed."""


class PublishUnavailableError(TransientError):
    pass


class StoreUnavailableError(TransientError):
    pass


class SettingsError(PermanentError):
    pass


class MappingError(PermanentError):
    pass


class InvalidDocumentError(MappingError):
    pass


class EventTooLargeError(PermanentError):
    pass


class OutboxError(PermanentError):
    pass


class OutboxConflictError(OutboxError):
    pass


class OutboxPreconditionFailedError(OutboxError):
    pass


class OutboxTooManyOperationsError(OutboxError):
    pass


class OutboxTooLargeError(OutboxError):
    pass


class PartitionKeyMismatchError(OutboxError):
    pass


class ConcurrencyConflictError(PermanentError):
    pass


class UnreadableMessageError(PermanentError):
    """A received message is not an integration event (bad JSON body, missing or invalid
    ``cloudEvents:`` properties): redelivering it cannot help."""


class EventInProgressError(TransientError):
    """Another delivery claimed the event and its claim has not expired: abandon the message,
    it comes back after the claim ends (done, released, or expired after a crash)."""


class InboxConflictError(TransientError):
    """A document the unit of work replaces, or the stream position, changed since it was
    read: handling again reads the new state."""


class InboxError(PermanentError):
    pass


class DuplicateEventError(InboxError):
    """The inbox already holds the event id for this consumer: its effect is committed."""


class PayloadMismatchError(InboxError):
    """An event id the consumer knows arrived with another payload hash: refused, never handled
    (a producer reusing ids, or a tampered message); dead-letter it."""


class InboxTooManyOperationsError(InboxError):
    pass


class InboxTooLargeError(InboxError):
    pass


def is_transient(error: BaseException) -> bool:
    """True when retrying the same work later may succeed."""
    return isinstance(error, RelayError) and error.transient
