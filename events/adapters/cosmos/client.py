"""The process-wide Cosmos DB client, its deadlines, and the start-up check of containers.

Deadlines: the client is built with the SDK's own knobs, which can bound its calls (unlike the
Service Bus SDK's sign-in): ``timeout`` is an absolute limit per operation, checked between
attempts (a paged query or change-feed read restarts it per page), ``connection_timeout`` and
``read_timeout`` bound one HTTP attempt, and connection retries are off (see
``_CONNECTION_RETRIES``). Against a server that accepts TCP and never answers, the constructor
(it reads the account) and every call fail within about ``timeout`` (observed, azure-cosmos
4.17) and become StoreUnavailableError naming the endpoint and resource.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from urllib.parse import urlsplit

from azure.cosmos import CosmosClient, DatabaseProxy
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from events.adapters.cosmos.errors import (
    CREDENTIALS_REFUSED_STATUS,
    location_of,
    translate_cosmos_errors,
)
from events.adapters.cosmos.transport import CosmosTransport
from events.adapters.identity import credential_for
from events.connections import CosmosConnection, connection_string_parts
from events.errors import SettingsError

__all__ = [
    "DEFAULT_TIMEOUT",
    "check_containers",
    "cosmos_client",
    "endpoint_of",
    "quiet_loopback_tls_warnings",
]

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

# urllib3 warns on every unverified HTTPS request; against the loopback dev server (self-signed
# certificate, --insecure-local) that was most of the relay's output. Any other host still warns.
_LOOPBACK_WARNING = r"Unverified HTTPS request is being made to host '(127\.0\.0\.1|localhost|::1)'"


def quiet_loopback_tls_warnings() -> None:
    """Silence urllib3's InsecureRequestWarning for loopback hosts only."""
    from urllib3.exceptions import InsecureRequestWarning  # noqa: PLC0415 - only when asked

    warnings.filterwarnings("ignore", message=_LOOPBACK_WARNING, category=InsecureRequestWarning)


#: Statuses worth retrying: timeout, gone, throttled, retry-with, server side.


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
        if exc.status_code in CREDENTIALS_REFUSED_STATUS:
            raise SettingsError(
                f"Cosmos DB {endpoint_of(connection)} refused the credentials "
                f"({exc.status_code}): check {connection.setting} (key, or the identity's role)",
                status=exc.status_code,
                setting=connection.setting,
                resource=endpoint_of(connection),
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
                transport=CosmosTransport(),
            )
        if connection.account_endpoint:
            credential = credential_for(connection.credential, connection.client_id)
            return CosmosClient(
                connection.account_endpoint,
                credential=credential,
                timeout=timeout,
                connection_timeout=connect,
                read_timeout=read,
                retry_total=_CONNECTION_RETRIES,
                transport=CosmosTransport(),
            )
    raise SettingsError(f"no Cosmos DB connection configured: set {connection.setting}")


def check_containers(
    database: DatabaseProxy,
    containers: Mapping[str, str],
    *,
    database_setting: str,
    connection_setting: str,
) -> None:
    """Start-up check: the database and each container (setting -> name) exist and the key
    is accepted. SettingsError naming the setting and what to do; StoreUnavailableError when
    Cosmos DB does not answer in time."""
    where = location_of(database)
    try:
        with translate_cosmos_errors("read database", where=where):
            database.read()
    except CosmosResourceNotFoundError:
        raise SettingsError(
            f"database '{database.id}' ({database_setting}) does not exist at {where}: "
            f"create it (infra, or python -m devstack.provision) or fix {database_setting}",
            status=404,
            setting=database_setting,
            resource=where,
        ) from None
    except CosmosHttpResponseError as exc:
        if exc.status_code in CREDENTIALS_REFUSED_STATUS:
            raise SettingsError(
                f"{where} refused the credentials ({exc.status_code}): check {connection_setting}",
                status=exc.status_code,
                setting=connection_setting,
                resource=where,
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
                f"at {where}: create it (infra, or python -m devstack.provision) or fix {setting}",
                status=404,
                setting=setting,
                resource=location_of(container),
            ) from None
