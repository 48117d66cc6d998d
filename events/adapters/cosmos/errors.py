"""The one table from Cosmos DB statuses to the package's errors, and its context manager.

- 408 410 429 449 5xx, or unreachable: retry later -> ``StoreUnavailableError`` (transient)
- 401 403: the key or the identity's role is refused -> ``SettingsError`` naming the setting
- 404 409 412 on a lease write: another instance owns the lease -> ``LeaseLostError``
- in an outbox batch, 409 conflict -> ``OutboxConflictError``, 412 stale entity ->
  ``OutboxPreconditionFailedError``, 413 too large -> ``OutboxTooLargeError``
- in an event-store batch, 409 another writer appended that version ->
  ``ConcurrencyConflictError``
- in a consumer's inbox batch, a handler's operation refused: 409 exists -> ``InboxError``,
  412 stale etag -> ``InboxConflictError`` (transient), 413 -> ``InboxTooLargeError``; the
  inbox record's own 409 is a duplicate, read and told apart by ``events.core.inbox``

Everything else is the caller's to interpret. One WARNING per outage and resource, one INFO on
recovery (``AvailabilityLog``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)

from events.availability import AvailabilityLog
from events.errors import (
    ConcurrencyConflictError,
    InboxConflictError,
    InboxError,
    InboxTooLargeError,
    OutboxConflictError,
    OutboxError,
    OutboxPreconditionFailedError,
    OutboxTooLargeError,
    PermanentError,
    RelayError,
    StoreUnavailableError,
)

__all__ = [
    "BATCH_ERRORS",
    "CREDENTIALS_REFUSED_STATUS",
    "LEASE_LOST_STATUS",
    "TRANSIENT_STATUS",
    "BatchWriter",
    "batch_error",
    "location_of",
    "read_item_or_none",
    "translate_cosmos_errors",
]

logger = logging.getLogger(__name__)

#: Statuses worth retrying: timeout, gone, throttled, retry-with, server side.
TRANSIENT_STATUS: Final = frozenset({408, 410, 429, 449, 500, 502, 503, 504})
#: The key or the identity's data role is refused: a configuration problem, not an outage.
CREDENTIALS_REFUSED_STATUS: Final = frozenset({401, 403})
#: A lease write that found the document gone (404), there already (409) or changed (412).
LEASE_LOST_STATUS: Final = frozenset({404, 409, 412})

BatchWriter = Literal["outbox", "eventstore", "inbox"]

#: Per writer, the status of the failing operation of a transactional batch -> its error.
BATCH_ERRORS: Final[Mapping[BatchWriter, Mapping[int, type[RelayError]]]] = MappingProxyType(
    {
        "outbox": MappingProxyType(
            {
                409: OutboxConflictError,
                412: OutboxPreconditionFailedError,
                413: OutboxTooLargeError,
            }
        ),
        "eventstore": MappingProxyType({409: ConcurrencyConflictError}),
        "inbox": MappingProxyType(
            {409: InboxError, 412: InboxConflictError, 413: InboxTooLargeError}
        ),
    }
)
_FALLBACK: Final[Mapping[BatchWriter, type[RelayError]]] = MappingProxyType(
    {"outbox": OutboxError, "eventstore": PermanentError, "inbox": InboxError}
)

_availability = AvailabilityLog(logger)


def batch_error(
    writer: BatchWriter,
    exc: CosmosBatchOperationError,
    message: str,
    *,
    ids: Mapping[str, str],
    resource: str | None = None,
) -> RelayError:
    """The error for a failed transactional batch: transient, or the writer's own."""
    status = exc.status_code
    if status in TRANSIENT_STATUS:
        return StoreUnavailableError(message, status=status, ids=ids, resource=resource)
    kind = BATCH_ERRORS[writer].get(status or 0, _FALLBACK[writer])
    return kind(message, status=status, ids=ids, resource=resource)


def location_of(container: ContainerProxy | DatabaseProxy) -> str:
    """``Cosmos DB host:port <database>/<container>`` for messages."""
    url = str(getattr(container.client_connection, "url_connection", ""))
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port or 443}" if parts.hostname else url
    if isinstance(container, ContainerProxy):
        return f"Cosmos DB {host} {container.container_link.split('/')[1]}/{container.id}"
    return f"Cosmos DB {host} {container.id}"


@contextmanager
def translate_cosmos_errors(what: str, *, where: str | None = None) -> Iterator[None]:
    """Turn transient Cosmos failures into StoreUnavailableError; let the rest through.

    ``where`` (endpoint and resource) is named in the error and keys the once-per-outage
    WARNING and the INFO on recovery."""
    subject = where or "Cosmos DB"
    try:
        yield
    except CosmosBatchOperationError:
        raise  # per-operation statuses: the batch's caller interprets them
    except CosmosHttpResponseError as exc:
        if exc.status_code in TRANSIENT_STATUS:
            _availability.down(subject, f"{what} answered {exc.status_code}")
            raise StoreUnavailableError(
                f"{what}: {subject} answered {exc.status_code}",
                status=exc.status_code,
                resource=subject,
            ) from exc
        raise
    except (ServiceRequestError, ServiceResponseError, OSError) as exc:
        _availability.down(subject, f"{what}: unreachable ({type(exc).__name__})")
        raise StoreUnavailableError(
            f"{what}: {subject} unreachable ({type(exc).__name__})", resource=subject
        ) from exc
    except AzureError as exc:
        _availability.down(subject, f"{what}: {type(exc).__name__}")
        raise StoreUnavailableError(
            f"{what}: {subject} {type(exc).__name__}", resource=subject
        ) from exc
    else:
        _availability.up(subject)


def read_item_or_none(
    container: ContainerProxy, document_id: str, partition_key: str, what: str, *, where: str
) -> dict[str, Any] | None:
    """A point read: the document, or None when it does not exist (a 404 is an answer: the
    store is up). Other failures as ``translate_cosmos_errors``."""
    with translate_cosmos_errors(what, where=where):
        try:
            item: dict[str, Any] = container.read_item(document_id, partition_key=partition_key)
        except CosmosResourceNotFoundError:
            return None
    return item
