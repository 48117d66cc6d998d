"""Change data capture of entity documents, by declarative allow-list rules per type.

An entity document ``{"id": "o-1", "partitionKey": "o-1", "type": "Order", ...}`` becomes
``OrderUpserted`` with ONLY the rule's fields, or ``OrderDeleted`` when its soft-delete flag is
true (deletes themselves never reach the latest-version change feed; the application sets the
flag and a TTL). Event ids derive from (container, partition key, document id, ``_lsn``):
Cosmos DB keeps ids unique per partition key value only, so two documents with the same id in
two partitions are two changes and must not share a message id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from events.core.contracts import EventPayload
from events.core.documents import SYSTEM_FIELDS, Document, change_time, document_id, document_lsn
from events.core.envelope import IntegrationEvent, deterministic_id, sequence_of
from events.core.sources.base import SourceContext

__all__ = ["CdcRule", "CdcSource", "cdc_event_id"]


def cdc_event_id(container: str, partition_key: str, document_id: str, lsn: int) -> str:
    """The event id of one captured change: unique per (container, partition, id, change)."""
    return deterministic_id("cdc", container, partition_key, document_id, str(lsn))


def _aliases(model: type[EventPayload]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


@dataclass(frozen=True)
class CdcRule:
    """How documents whose ``type`` equals ``document_type`` become events.

    ``fields`` is the allow-list: document fields copied into the upserted payload, under the
    same name. ``id_field`` receives the document id. Both must exist on the contracts.
    """

    document_type: str
    upserted: type[EventPayload]
    deleted: type[EventPayload]
    id_field: str
    fields: tuple[str, ...]
    deleted_flag: str = "deleted"

    def __post_init__(self) -> None:
        leaking = SYSTEM_FIELDS.intersection(self.fields)
        if leaking:
            raise ValueError(f"CDC rule for {self.document_type} allows system fields {leaking}")
        unknown = set(self.fields) - _aliases(self.upserted)
        if unknown:
            raise ValueError(
                f"CDC rule for {self.document_type}: {sorted(unknown)} are not on "
                f"{self.upserted.event_type} v{self.upserted.version}"
            )
        for model in (self.upserted, self.deleted):
            if self.id_field not in _aliases(model):
                raise ValueError(f"{model.__name__} has no field {self.id_field!r}")


class CdcSource:
    kind: Final = "cdc"

    def __init__(self, rules: Sequence[CdcRule]) -> None:
        self._rules = {rule.document_type: rule for rule in rules}
        if len(self._rules) != len(rules):
            raise ValueError("two CDC rules for the same document type")

    def claims(self, document: Document) -> bool:
        document_type = document.get("type")
        return isinstance(document_type, str) and document_type in self._rules

    def to_events(
        self, document: Document, partition_key: str, context: SourceContext
    ) -> list[IntegrationEvent]:
        rule = self._rules[str(document.get("type"))]
        doc_id = document_id(document)
        lsn = document_lsn(document)
        if document.get(rule.deleted_flag) is True:
            contract = rule.deleted
            data = contract.public_data({rule.id_field: doc_id})
        else:
            contract = rule.upserted
            allowed = {name: document[name] for name in rule.fields if name in document}
            allowed[rule.id_field] = doc_id
            data = contract.public_data(allowed)
        return [
            IntegrationEvent(
                id=cdc_event_id(context.container, partition_key, doc_id, lsn),
                source=context.source_uri,
                type=contract.event_type,
                subject=doc_id,
                time=change_time(document),
                dataschema=contract.schema_uri(),
                data=data,
                sequence=sequence_of(lsn),
                partitionkey=partition_key,
            )
        ]
