"""The transactional inbox on Cosmos DB: the consumer's own container, one batch per event.

The inbox record (``kind = "inbox"``, id from consumer and event id, with a ``ttl``) and the
stream position (``kind = "position"``) live in the consumer's container next to its
documents, in the partition the handler writes to, and are committed with its operations by
``container.execute_item_batch``: all or nothing
(https://learn.microsoft.com/azure/cosmos-db/nosql/transactional-batch). The record is a
*create*: its 409 means the event was committed before. The container's partition key path
must be top-level; records expire only when the container has TTL on (``defaultTtl`` -1 or
more), positions never.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import CosmosBatchOperationError

from events.adapters.cosmos.errors import (
    batch_error,
    location_of,
    read_item_or_none,
    translate_cosmos_errors,
)
from events.core.envelope import IntegrationEvent
from events.core.inbox import (
    InboxRecord,
    Operation,
    PositionWrite,
    position_document,
    record_conflict,
)
from events.errors import InboxConflictError, RelayError

__all__ = ["CosmosTransactionalInbox"]

BatchOperation = tuple[str, tuple[Any, ...], dict[str, Any]]


class CosmosTransactionalInbox:
    def __init__(
        self, container: ContainerProxy, *, partition_key_path: str = "/partitionKey"
    ) -> None:
        if partition_key_path.count("/") != 1:
            raise ValueError("the transactional inbox supports a top-level partition key path")
        self._container = container
        self._field = partition_key_path.strip("/")
        self._where = location_of(container)

    def read(self, partition_key: str, document_id: str) -> dict[str, Any] | None:
        return read_item_or_none(
            self._container, document_id, partition_key, "inbox read", where=self._where
        )

    def commit(
        self,
        event: IntegrationEvent,
        record: InboxRecord,
        partition_key: str,
        operations: Sequence[Operation],
        position: PositionWrite | None = None,
    ) -> None:
        batch: list[BatchOperation] = [
            ("create", ({**record.document(), self._field: partition_key},), {})
        ]
        if position is not None:
            body = {**position_document(position), self._field: partition_key}
            expected = position.expected
            batch.append(
                ("create", (body,), {})
                if expected is None
                else ("replace", (body["id"], body), {"if_match_etag": expected.version})
            )
        owned = len(batch)
        batch.extend(_sdk_operation(operation) for operation in operations)
        try:
            with translate_cosmos_errors("inbox commit", where=self._where):
                self._container.execute_item_batch(
                    batch_operations=batch, partition_key=partition_key
                )
        except CosmosBatchOperationError as exc:
            raise self._refused(
                exc, event, record, partition_key, operations=operations, owned=owned
            ) from exc

    def _refused(
        self,
        exc: CosmosBatchOperationError,
        event: IntegrationEvent,
        record: InboxRecord,
        partition_key: str,
        *,
        operations: Sequence[Operation],
        owned: int,
    ) -> RelayError:
        index = exc.error_index
        ids = {"consumer": record.consumer, "event": record.event_id}
        if index == 0 and exc.status_code == 409:
            return record_conflict(record, event, self.read(partition_key, record.id))
        if index is not None and 0 < index < owned:
            return InboxConflictError(
                f"the position of stream {event.partitionkey} changed meanwhile "
                f"({exc.status_code}); nothing written",
                status=exc.status_code,
                ids=ids,
                resource=self._where,
            )
        what = "an operation"
        if index is not None and owned <= index < owned + len(operations):
            operation = operations[index - owned]
            what = f"{operation.kind} of document {operation.document_id}"
            ids = {**ids, "document": operation.document_id}
        return batch_error(
            "inbox",
            exc,
            f"inbox commit: {what} refused ({exc.status_code}); nothing written",
            ids=ids,
            resource=self._where,
        )


def _sdk_operation(operation: Operation) -> BatchOperation:
    options: dict[str, Any] = {}
    if operation.if_match is not None:
        options["if_match_etag"] = operation.if_match
    if operation.kind in ("create", "upsert"):
        return (operation.kind, (dict(operation.body or {}),), options)
    if operation.kind == "replace":
        return ("replace", (operation.document_id, dict(operation.body or {})), options)
    if operation.kind == "patch":
        return ("patch", (operation.document_id, [dict(p) for p in operation.patch]), options)
    return ("delete", (operation.document_id,), options)
