"""Cosmos DB adapters for the relay's own state: the quarantine and the consumer inbox."""

from __future__ import annotations

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from events.adapters.cosmos.errors import location_of, translate_cosmos_errors
from events.core.quarantine import QuarantineRecord

__all__ = ["CosmosInbox", "CosmosQuarantine"]


class CosmosQuarantine:
    """Quarantine records as documents; upsert by deterministic id, so retries are harmless."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)

    def put(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine write", where=self._where):
            self._container.upsert_item(record.to_document())

    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        where = "WHERE c.feed = @feed " if feed is not None else ""
        parameters: list[dict[str, object]] = [{"name": "@limit", "value": limit}]
        if feed is not None:
            parameters.append({"name": "@feed", "value": feed})
        with translate_cosmos_errors("quarantine read", where=self._where):
            items = self._container.query_items(
                f"SELECT TOP @limit * FROM c {where}ORDER BY c.quarantinedAt",  # noqa: S608 - fixed text
                parameters=parameters,
                enable_cross_partition_query=True,
            )
            return [QuarantineRecord.from_document(item) for item in items]

    def delete(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine delete", where=self._where):
            try:
                self._container.delete_item(record.id, partition_key=record.partition_key)
            except CosmosResourceNotFoundError:
                return  # already gone: deleting twice is harmless


class CosmosInbox:
    """Consumer inbox: one document per (consumer, event id); partition key ``/consumer``."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)

    def seen(self, consumer: str, event_id: str) -> bool:
        with translate_cosmos_errors("inbox read", where=self._where):
            try:
                self._container.read_item(event_id, partition_key=consumer)
            except CosmosResourceNotFoundError:
                return False
        return True

    def record(self, consumer: str, event_id: str) -> None:
        with translate_cosmos_errors("inbox write", where=self._where):
            self._container.upsert_item({"id": event_id, "consumer": consumer})
