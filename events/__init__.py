"""Cosmos DB change feed -> CloudEvents integration events -> Azure Service Bus.

The public API is small: what an application calls to write events (``OutboxWriter``,
``EventStore``) and to consume them (``TransactionalConsumer`` with a ``TransactionalInbox``:
``CosmosTransactionalInbox`` or ``InMemoryTransactionalInbox``, handing the handler a
``UnitOfWork``; ``IdempotentConsumer`` with an ``Inbox``: ``CosmosInbox`` or ``InMemoryInbox``;
both answer an ``Outcome`` and take an ``OrderPolicy``), what a contract is
(``EventPayload``), the event itself, and the error tree. The SDK-backed names load their
adapter (and the Azure SDK) on first use, so importing ``events`` stays cheap and SDK-free.
Everything else is internal and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from events.core.consumer import IdempotentConsumer, Inbox, InMemoryInbox, Outcome
from events.core.contracts import ContractRegistry, EventPayload
from events.core.envelope import IntegrationEvent
from events.core.inbox import (
    InMemoryTransactionalInbox,
    TransactionalConsumer,
    TransactionalInbox,
    UnitOfWork,
)
from events.core.messages import event_from_message
from events.core.ordering import GapReport, OrderPolicy
from events.errors import (
    ConcurrencyConflictError,
    DuplicateEventError,
    EventInProgressError,
    EventTooLargeError,
    InboxConflictError,
    InboxError,
    InboxTooLargeError,
    InboxTooManyOperationsError,
    InvalidDocumentError,
    MappingError,
    OutboxConflictError,
    OutboxError,
    OutboxPreconditionFailedError,
    OutboxTooLargeError,
    OutboxTooManyOperationsError,
    PartitionKeyMismatchError,
    PayloadMismatchError,
    PermanentError,
    PublishUnavailableError,
    RelayError,
    SettingsError,
    StoreUnavailableError,
    TransientError,
    is_transient,
)

if TYPE_CHECKING:
    from events.adapters.cosmos.eventstore import EventStore, NewEvent
    from events.adapters.cosmos.inbox import CosmosTransactionalInbox
    from events.adapters.cosmos.outbox import OutboxEvent, OutboxWriter
    from events.adapters.cosmos.stores import CosmosInbox

__all__ = [
    "ConcurrencyConflictError",
    "ContractRegistry",
    "CosmosInbox",
    "CosmosTransactionalInbox",
    "DuplicateEventError",
    "EventInProgressError",
    "EventPayload",
    "EventStore",
    "EventTooLargeError",
    "GapReport",
    "IdempotentConsumer",
    "InMemoryInbox",
    "InMemoryTransactionalInbox",
    "Inbox",
    "InboxConflictError",
    "InboxError",
    "InboxTooLargeError",
    "InboxTooManyOperationsError",
    "IntegrationEvent",
    "InvalidDocumentError",
    "MappingError",
    "NewEvent",
    "OrderPolicy",
    "OutboxConflictError",
    "OutboxError",
    "OutboxEvent",
    "OutboxPreconditionFailedError",
    "OutboxTooLargeError",
    "OutboxTooManyOperationsError",
    "OutboxWriter",
    "Outcome",
    "PartitionKeyMismatchError",
    "PayloadMismatchError",
    "PermanentError",
    "PublishUnavailableError",
    "RelayError",
    "SettingsError",
    "StoreUnavailableError",
    "TransactionalConsumer",
    "TransactionalInbox",
    "TransientError",
    "UnitOfWork",
    "event_from_message",
    "is_transient",
]

#: Public names whose module imports the Azure SDK: loaded on first use.
_LAZY = {
    "CosmosInbox": "events.adapters.cosmos.stores",
    "CosmosTransactionalInbox": "events.adapters.cosmos.inbox",
    "EventStore": "events.adapters.cosmos.eventstore",
    "NewEvent": "events.adapters.cosmos.eventstore",
    "OutboxEvent": "events.adapters.cosmos.outbox",
    "OutboxWriter": "events.adapters.cosmos.outbox",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'events' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
