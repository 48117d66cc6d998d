"""How to reach Cosmos DB and Service Bus: the connection descriptions the settings produce
and the adapters consume (shared kernel: no SDK, no settings reader here).

The same setting NAME serves Azure (identity-based, ``<NAME>__accountEndpoint`` and friends)
and local runs (``<NAME>`` holds a connection string), as the Functions bindings do:
https://learn.microsoft.com/azure/azure-functions/functions-reference#configure-an-identity-based-connection
Each description remembers that name, so an error can say which setting to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CosmosConnection", "Credential", "ServiceBusConnection", "connection_string_parts"]

Credential = Literal["managedidentity", "default"]


@dataclass(frozen=True)
class CosmosConnection:
    """Either a connection string (local) or an endpoint reached with an Entra ID identity."""

    setting: str
    connection_string: str | None = None
    account_endpoint: str | None = None
    credential: Credential = "default"
    client_id: str | None = None


@dataclass(frozen=True)
class ServiceBusConnection:
    setting: str
    connection_string: str | None = None
    fully_qualified_namespace: str | None = None
    credential: Credential = "default"
    client_id: str | None = None


def connection_string_parts(conn: str) -> dict[str, str]:
    """``Key=value;...`` as a dict with lower-cased keys (values keep their ``=`` padding)."""
    parts: dict[str, str] = {}
    for segment in conn.split(";"):
        key, sep, value = segment.strip().partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    return parts
