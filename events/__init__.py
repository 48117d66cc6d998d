"""Cosmos DB change feed -> CloudEvents integration events -> Azure Service Bus.

The public API is small: what an application needs to write events (the outbox writer, the
event store) and to consume them (the idempotent consumer), the relay and its ports for hosts,
and the error tree. Everything else is internal and may change.
"""

from events.consumer import IdempotentConsumer, InMemoryInbox
from events.contracts import ContractRegistry, EventPayload, default_registry
from events.envelope import IntegrationEvent
from events.errors import (
    ConcurrencyConflictError,
    EventTooLargeError,
    InvalidDocumentError,
    MappingError,
    OutboxConflictError,
    OutboxError,
    OutboxTooLargeError,
    OutboxTooManyOperationsError,
    PartitionKeyMismatchError,
    PermanentError,
    PublishUnavailableError,
    RelayError,
    SettingsError,
    StoreUnavailableError,
    TransientError,
    is_transient,
)
from events.messages import OutgoingMessage, Router, event_from_message, to_message
from events.publisher import InMemoryPublisher, Publisher
from events.quarantine import InMemoryQuarantine, QuarantineReason, QuarantineRecord
from events.relay import BatchOutcome, Feed, Relay
from events.settings import Settings, load_settings
from events.sources import CdcRule, CdcSource, EventStoreSource, OutboxSource

__all__ = [
    "BatchOutcome",
    "CdcRule",
    "CdcSource",
    "ConcurrencyConflictError",
    "ContractRegistry",
    "EventPayload",
    "EventStoreSource",
    "EventTooLargeError",
    "Feed",
    "IdempotentConsumer",
    "InMemoryInbox",
    "InMemoryPublisher",
    "InMemoryQuarantine",
    "IntegrationEvent",
    "InvalidDocumentError",
    "MappingError",
    "OutboxConflictError",
    "OutboxError",
    "OutboxSource",
    "OutboxTooLargeError",
    "OutboxTooManyOperationsError",
    "OutgoingMessage",
    "PartitionKeyMismatchError",
    "PermanentError",
    "PublishUnavailableError",
    "Publisher",
    "QuarantineReason",
    "QuarantineRecord",
    "Relay",
    "RelayError",
    "Router",
    "Settings",
    "SettingsError",
    "StoreUnavailableError",
    "TransientError",
    "default_registry",
    "event_from_message",
    "is_transient",
    "load_settings",
    "to_message",
]
