"""Cosmos DB adapters for the relay's own state: the quarantine and the consumer inbox.

Also the process-wide Cosmos client factory and the translation of Cosmos errors into the
package's tree: throttling and unavailability are transient, the rest is for the caller.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import (
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from events.errors import SettingsError, StoreUnavailableError
from events.quarantine import QuarantineRecord
from events.settings import CosmosConnection

__all__ = [
    "TRANSIENT_STATUS",
    "CosmosInbox",
    "CosmosQuarantine",
    "cosmos_client",
    "translate_cosmos_errors",
]

#: Statuses worth retrying: timeout, gone, throttled, retry-with, server side.
TRANSIENT_STATUS: Final = frozenset({408, 410, 429, 449, 500, 502, 503, 504})


@functools.cache
def cosmos_client(connection: CosmosConnection, *, verify_tls: bool = True) -> CosmosClient:
    """The process-wide client for a connection (cached: never one per invocation)."""
    if connection.connection_string:
        return CosmosClient.from_connection_string(
            connection.connection_string, connection_verify=verify_tls
        )
    if connection.account_endpoint:
        credential = (
            ManagedIdentityCredential(client_id=connection.client_id)
            if connection.credential == "managedidentity"
            else DefaultAzureCredential()
        )
        return CosmosClient(connection.account_endpoint, credential=credential)
    raise SettingsError("no Cosmos DB connection configured")


@contextmanager
def translate_cosmos_errors(what: str) -> Iterator[None]:
    """Turn transient Cosmos failures into StoreUnavailableError; let the rest through."""
    try:
        yield
    except CosmosBatchOperationError:
        raise  # per-operation statuses: the batch's caller interprets them
    except CosmosHttpResponseError as exc:
        if exc.status_code in TRANSIENT_STATUS:
            raise StoreUnavailableError(f"{what}: Cosmos DB answered {exc.status_code}") from exc
        raise
    except (ServiceRequestError, ServiceResponseError, OSError) as exc:
        raise StoreUnavailableError(f"{what}: Cosmos DB unreachable") from exc
    except AzureError as exc:
        raise StoreUnavailableError(f"{what}: {type(exc).__name__}") from exc


class CosmosQuarantine:
    """Quarantine records as documents; upsert by deterministic id, so retries are harmless."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    def put(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine write"):
            self._container.upsert_item(record.to_document())

    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        where = "WHERE c.feed = @feed " if feed is not None else ""
        parameters: list[dict[str, object]] = [{"name": "@limit", "value": limit}]
        if feed is not None:
            parameters.append({"name": "@feed", "value": feed})
        with translate_cosmos_errors("quarantine read"):
            items = self._container.query_items(
                f"SELECT TOP @limit * FROM c {where}ORDER BY c.quarantinedAt",  # noqa: S608 - fixed text
                parameters=parameters,
                enable_cross_partition_query=True,
            )
            return [QuarantineRecord.from_document(item) for item in items]

    def delete(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine delete"):
            try:
                self._container.delete_item(record.id, partition_key=record.partition_key)
            except CosmosResourceNotFoundError:
                return  # already gone: deleting twice is harmless


class CosmosInbox:
    """Consumer inbox: one document per (consumer, event id); partition key ``/consumer``."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    def seen(self, consumer: str, event_id: str) -> bool:
        with translate_cosmos_errors("inbox read"):
            try:
                self._container.read_item(event_id, partition_key=consumer)
            except CosmosResourceNotFoundError:
                return False
        return True

    def record(self, consumer: str, event_id: str) -> None:
        with translate_cosmos_errors("inbox write"):
            self._container.upsert_item({"id": event_id, "consumer": consumer})
