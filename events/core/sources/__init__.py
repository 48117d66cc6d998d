"""Pure mappings from changed documents to integration events, one module per source kind.

A source claims documents (by their ``type`` field) and turns one document into zero or more
events. Sources do no I/O and read no settings. Errors: ``MappingError`` (permanent).
"""

from events.core.sources.base import Source, SourceContext
from events.core.sources.cdc import CdcRule, CdcSource
from events.core.sources.eventstore import EventStoreSource, stream_event_document
from events.core.sources.outbox import OutboxSource, outbox_document

__all__ = [
    "CdcRule",
    "CdcSource",
    "EventStoreSource",
    "OutboxSource",
    "Source",
    "SourceContext",
    "outbox_document",
    "stream_event_document",
]
