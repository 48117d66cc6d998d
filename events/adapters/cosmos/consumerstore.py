"""A declared consumer's own container, as the documents of one partition key value.

The handler reads by id and upserts (``events.core.handling.Documents``); this adapter sets the
container's partition key field on every document it writes, so a handler stays inside the
aggregate of the event it handles. Errors go through the Cosmos DB table
(``events.adapters.cosmos.errors``): throttling and outages are transient, the rest permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.cosmos import ContainerProxy

from events.adapters.cosmos.errors import location_of, read_item_or_none, translate_cosmos_errors
from events.core.handling import Documents

__all__ = ["CosmosConsumerStore"]


class _Partition:
    def __init__(self, container: ContainerProxy, where: str, field: str, value: str) -> None:
        self._container = container
        self._where = where
        self._field = field
        self._value = value

    def read(self, document_id: str) -> dict[str, Any] | None:
        return read_item_or_none(
            self._container, document_id, self._value, "consumer store read", where=self._where
        )

    def upsert(self, document: Mapping[str, Any]) -> None:
        body = {**document, self._field: self._value}
        with translate_cosmos_errors("consumer store write", where=self._where):
            self._container.upsert_item(body)


class CosmosConsumerStore:
    """``partition(value)``: the documents of one partition key value of the container.

    Only top-level partition key paths (``/orderId``) are supported, as the declaration uses.
    """

    def __init__(self, container: ContainerProxy, partition_key_path: str) -> None:
        field = partition_key_path.removeprefix("/")
        if not field or "/" in field:
            raise ValueError(
                f"a top-level partition key path is needed, got {partition_key_path!r}"
            )
        self._container = container
        self._field = field
        self._where = location_of(container)

    def partition(self, value: str) -> Documents:
        return _Partition(self._container, self._where, self._field, value)
