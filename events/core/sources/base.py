"""What every source offers the relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from events.core.contracts import ContractRegistry
from events.core.documents import Document
from events.core.envelope import IntegrationEvent

__all__ = ["Source", "SourceContext"]


@dataclass(frozen=True)
class SourceContext:
    """Facts about the monitored container that mapping needs; no clients, no settings."""

    source_uri: str
    container: str
    contracts: ContractRegistry


class Source(Protocol):
    @property
    def kind(self) -> str: ...

    def claims(self, document: Document) -> bool:
        """True when this source is responsible for the document."""
        ...

    def to_events(
        self, document: Document, partition_key: str, context: SourceContext
    ) -> list[IntegrationEvent]:
        """Map one changed document; raise MappingError when it cannot be mapped."""
        ...
