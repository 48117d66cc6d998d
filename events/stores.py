"""Cosmos DB adapters for the relay's own state: the quarantine and the consumer inbox.

Also the process-wide Cosmos client factory and the translation of Cosmos errors into the
package's tree: throttling and unavailability are transient, the rest is for the caller.

Deadlines: the client is built with the SDK's own knobs, which can bound its calls (unlike the
Service Bus SDK's sign-in): ``timeout`` is an absolute limit per operation, checked between
attempts (a paged query or change-feed read restarts it per page), ``connection_timeout`` and
``read_timeout`` bound one HTTP attempt, and connection retries are off (see
``_CONNECTION_RETRIES``). Against a server that accepts TCP and never answers, the constructor
(it reads the account) and every call fail within about ``timeout`` (observed, azure-cosmos
4.17) and become StoreUnavailableError naming the endpoint and resource. One WARNING per
outage and resource, one INFO on recovery (``AvailabilityLog``).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import (
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from events.availability import AvailabilityLog
from events.errors import SettingsError, StoreUnavailableError
from events.quarantine import QuarantineRecord
from events.settings import COSMOS_CONNECTION, DATABASE, CosmosConnection, connection_string_parts

__all__ = [
    "DEFAULT_TIMEOUT",
    "TRANSIENT_STATUS",
    "CosmosInbox",
    "CosmosQuarantine",
    "check_containers",
    "cosmos_client",
    "endpoint_of",
    "location_of",
    "quiet_loopback_tls_warnings",
    "translate_cosmos_errors",
]

logger = logging.getLogger(__name__)

#: Seconds one Cosmos DB operation may take, the SDK's retries included (RELAY_COSMOS_TIMEOUT).
DEFAULT_TIMEOUT = 30.0
#: One HTTP connection attempt; shorter than the whole operation so that the SDK can retry.
_CONNECT_TIMEOUT = 10.0
#: One HTTP read, as a share of the operation's timeout: the SDK checks its absolute timeout
#: only between attempts, so a silent server costs about timeout + one read timeout.
_READ_SHARE = 0.5
#: azure-core connection retries inside one operation. Its default (10, with backoff) is not
#: bounded by ``timeout``: against a stopped server one query took 9.6 s with timeout=2;
#: with 0 it took 1.0-2.1 s (azure-cosmos 4.17, observed). The relay retries the batch itself.
#: Throttling (429) retries are the SDK's own policy and stay bounded by ``timeout``.
_CONNECTION_RETRIES = 0
_UNAUTHORIZED = frozenset({401, 403})

_availability = AvailabilityLog(logger)

# urllib3 warns on every unverified HTTPS request; against the loopback dev server (self-signed
# certificate, --insecure-local) that was most of the relay's output. Any other host still warns.
_LOOPBACK_WARNING = r"Unverified HTTPS request is being made to host '(127\.0\.0\.1|localhost|::1)'"


def quiet_loopback_tls_warnings() -> None:
    """Silence urllib3's InsecureRequestWarning for loopback hosts only."""
    from urllib3.exceptions import InsecureRequestWarning  # noqa: PLC0415 - only when asked

    warnings.filterwarnings("ignore", message=_LOOPBACK_WARNING, category=InsecureRequestWarning)


#: Statuses worth retrying: timeout, gone, throttled, retry-with, server side.
TRANSIENT_STATUS: Final = frozenset({408, 410, 429, 449, 500, 502, 503, 504})


def endpoint_of(connection: CosmosConnection) -> str:
    """``host:port`` of a connection, for messages an operator can act on."""
    if connection.connection_string:
        url = connection_string_parts(connection.connection_string).get("accountendpoint", "")
    else:
        url = connection.account_endpoint or ""
    parts = urlsplit(url)
    if not parts.hostname:
        return url or "(no endpoint)"
    return f"{parts.hostname}:{parts.port or 443}"


@functools.cache
def cosmos_client(
    connection: CosmosConnection, *, verify_tls: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> CosmosClient:
    """The process-wide client for a connection (cached: never one per invocation).

    The constructor reads the account, so an unreachable endpoint fails here, within
    ``timeout``, as StoreUnavailableError."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a finite number of seconds greater than 0")
    try:
        return _new_client(connection, verify_tls=verify_tls, timeout=timeout)
    except CosmosHttpResponseError as exc:
        if exc.status_code in _UNAUTHORIZED:
            raise SettingsError(
                f"Cosmos DB {endpoint_of(connection)} refused the credentials "
                f"({exc.status_code}): check {COSMOS_CONNECTION} (key, or the identity's role)"
            ) from None
        raise


def _new_client(connection: CosmosConnection, *, verify_tls: bool, timeout: float) -> CosmosClient:
    connect = min(timeout, _CONNECT_TIMEOUT)
    read = timeout * _READ_SHARE
    with translate_cosmos_errors("connect", where=f"Cosmos DB {endpoint_of(connection)}"):
        if connection.connection_string:
            return CosmosClient.from_connection_string(
                connection.connection_string,
                connection_verify=verify_tls,
                timeout=timeout,
                connection_timeout=connect,
                read_timeout=read,
                retry_total=_CONNECTION_RETRIES,
            )
        if connection.account_endpoint:
            credential = (
                ManagedIdentityCredential(client_id=connection.client_id)
                if connection.credential == "managedidentity"
                else DefaultAzureCredential()
            )
            return CosmosClient(
                connection.account_endpoint,
                credential=credential,
                timeout=timeout,
                connection_timeout=connect,
                read_timeout=read,
                retry_total=_CONNECTION_RETRIES,
            )
    raise SettingsError(f"no Cosmos DB connection configured: set {COSMOS_CONNECTION}")


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
            raise StoreUnavailableError(f"{what}: {subject} answered {exc.status_code}") from exc
        raise
    except (ServiceRequestError, ServiceResponseError, OSError) as exc:
        _availability.down(subject, f"{what}: unreachable ({type(exc).__name__})")
        raise StoreUnavailableError(
            f"{what}: {subject} unreachable ({type(exc).__name__})"
        ) from exc
    except AzureError as exc:
        _availability.down(subject, f"{what}: {type(exc).__name__}")
        raise StoreUnavailableError(f"{what}: {subject} {type(exc).__name__}") from exc
    else:
        _availability.up(subject)


def check_containers(database: DatabaseProxy, containers: Mapping[str, str]) -> None:
    """Start-up check: the database and each container (setting -> name) exist and the key
    is accepted. SettingsError naming the setting and what to do; StoreUnavailableError when
    Cosmos DB does not answer in time."""
    where = location_of(database)
    try:
        with translate_cosmos_errors("read database", where=where):
            database.read()
    except CosmosResourceNotFoundError:
        raise SettingsError(
            f"database '{database.id}' ({DATABASE}) does not exist at {where}: "
            f"create it (infra, or python -m devstack.provision) or fix {DATABASE}"
        ) from None
    except CosmosHttpResponseError as exc:
        if exc.status_code in _UNAUTHORIZED:
            raise SettingsError(
                f"{where} refused the credentials ({exc.status_code}): check {COSMOS_CONNECTION}"
            ) from None
        raise
    for setting, name in containers.items():
        container = database.get_container_client(name)
        try:
            with translate_cosmos_errors("read container", where=location_of(container)):
                container.read()
        except CosmosResourceNotFoundError:
            raise SettingsError(
                f"container '{name}' ({setting}) does not exist in database '{database.id}' "
                f"at {where}: create it (infra, or python -m devstack.provision) or fix {setting}"
            ) from None


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
