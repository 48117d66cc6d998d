"""Typed settings read once from app settings (environment variables), validated together.

The same setting NAMES serve Azure (identity-based, ``<NAME>__accountEndpoint`` and friends)
and local runs (``<NAME>`` holds a connection string), as the Functions bindings do:
https://learn.microsoft.com/azure/azure-functions/functions-reference#configure-an-identity-based-connection

Defaults agree with ``infra/topology.json`` (a test pins that); Bicep sets every one of them.
"""

from __future__ import annotations

import binascii
import json
import math
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from events.errors import SettingsError

__all__ = [
    "APP_SETTINGS",
    "COSMOS_CONNECTION",
    "COSMOS_TIMEOUT",
    "SERVICEBUS_CONNECTION",
    "SERVICEBUS_TIMEOUT",
    "ContainerNames",
    "CosmosConnection",
    "ServiceBusConnection",
    "Settings",
    "connection_string_parts",
    "load_settings",
]

COSMOS_CONNECTION: Final = "RELAY_COSMOS"
SERVICEBUS_CONNECTION: Final = "RELAY_SERVICEBUS"

DATABASE: Final = "RELAY_DATABASE"
ORDERS_CONTAINER: Final = "RELAY_ORDERS_CONTAINER"
EVENTSTORE_CONTAINER: Final = "RELAY_EVENTSTORE_CONTAINER"
LEASES_CONTAINER: Final = "RELAY_LEASES_CONTAINER"
QUARANTINE_CONTAINER: Final = "RELAY_QUARANTINE_CONTAINER"
INBOX_CONTAINER: Final = "RELAY_INBOX_CONTAINER"
EVENT_SOURCE: Final = "RELAY_EVENT_SOURCE"
DEFAULT_DESTINATION: Final = "RELAY_DEFAULT_DESTINATION"
ROUTES: Final = "RELAY_ROUTES"
#: Seconds one network call may take before it counts as unavailable (docs/decisions.md, 15).
COSMOS_TIMEOUT: Final = "RELAY_COSMOS_TIMEOUT"
SERVICEBUS_TIMEOUT: Final = "RELAY_SERVICEBUS_TIMEOUT"

#: Settings with a default, and the default (which matches infra/topology.json).
DEFAULTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        DATABASE: "relay",
        ORDERS_CONTAINER: "orders",
        EVENTSTORE_CONTAINER: "eventstore",
        LEASES_CONTAINER: "leases",
        QUARANTINE_CONTAINER: "quarantine",
        INBOX_CONTAINER: "inbox",
        EVENT_SOURCE: "/integration-relay",
        DEFAULT_DESTINATION: "integration-events",
        ROUTES: json.dumps({"PaymentCaptured": "payments"}),
    }
)

#: Every app setting the code reads; ``NAME__x`` stands for the identity-based variants.
APP_SETTINGS: Final = (
    f"{COSMOS_CONNECTION}__accountEndpoint",
    f"{COSMOS_CONNECTION}__credential",
    f"{COSMOS_CONNECTION}__clientId",
    f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace",
    f"{SERVICEBUS_CONNECTION}__credential",
    f"{SERVICEBUS_CONNECTION}__clientId",
    *DEFAULTS,
)

#: Deadlines: optional tuning, not infrastructure (so not in DEFAULTS, which Bicep mirrors).
TIMEOUT_DEFAULTS: Final[Mapping[str, float]] = MappingProxyType(
    {COSMOS_TIMEOUT: 30.0, SERVICEBUS_TIMEOUT: 30.0}
)
_MAX_TIMEOUT = 600.0

_MAX_ENTITY_NAME = 260


@dataclass(frozen=True)
class CosmosConnection:
    """Either a connection string (local) or an endpoint reached with an Entra ID identity."""

    connection_string: str | None = None
    account_endpoint: str | None = None
    credential: Literal["managedidentity", "default"] = "default"
    client_id: str | None = None


@dataclass(frozen=True)
class ServiceBusConnection:
    connection_string: str | None = None
    fully_qualified_namespace: str | None = None
    credential: Literal["managedidentity", "default"] = "default"
    client_id: str | None = None


@dataclass(frozen=True)
class ContainerNames:
    orders: str
    eventstore: str
    leases: str
    quarantine: str
    inbox: str


@dataclass(frozen=True)
class Settings:
    cosmos: CosmosConnection
    service_bus: ServiceBusConnection
    database: str
    containers: ContainerNames
    event_source: str
    default_destination: str
    routes: Mapping[str, str] = field(default_factory=dict)
    cosmos_timeout: float = TIMEOUT_DEFAULTS[COSMOS_TIMEOUT]
    servicebus_timeout: float = TIMEOUT_DEFAULTS[SERVICEBUS_TIMEOUT]

    @property
    def destinations(self) -> list[str]:
        """The default destination and every routed one, each once, in a stable order."""
        return list(dict.fromkeys([self.default_destination, *self.routes.values()]))


def _credential(
    environ: Mapping[str, str], name: str, problems: list[str]
) -> Literal["managedidentity", "default"]:
    value = environ.get(f"{name}__credential", "").strip().lower()
    if value in ("", "default"):
        return "default"
    if value == "managedidentity":
        return "managedidentity"
    problems.append(f"{name}__credential must be 'managedidentity' (or unset), got {value!r}")
    return "default"


def _connection(
    environ: Mapping[str, str],
    name: str,
    *,
    address_key: str,
    string_marker: str,
    string_problems: Callable[[str], list[str]],
    address_problem: Callable[[str], str | None],
    problems: list[str],
) -> tuple[str | None, str | None, Literal["managedidentity", "default"], str | None]:
    """(connection string, identity address, credential, client id) of one connection setting."""
    conn = environ.get(name, "").strip()
    address = environ.get(f"{name}__{address_key}", "").strip()
    credential = _credential(environ, name, problems)
    client_id = environ.get(f"{name}__clientId", "").strip() or None
    if conn:
        if string_marker not in conn:
            problems.append(f"{name} must be a connection string with {string_marker}")
        else:
            problems.extend(f"{name} {problem}" for problem in string_problems(conn))
        return conn, None, "default", None
    if address:
        problem = address_problem(address)
        if problem:
            problems.append(f"{name}__{address_key} {problem}, got {address!r}")
        return None, address, credential, client_id
    problems.append(f"missing {name}__{address_key} (in Azure) or {name} (a connection string)")
    return None, None, credential, client_id


def connection_string_parts(conn: str) -> dict[str, str]:
    """``Key=value;...`` as a dict with lower-cased keys (values keep their ``=`` padding)."""
    parts: dict[str, str] = {}
    for segment in conn.split(";"):
        key, sep, value = segment.strip().partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    return parts


def _cosmos_string_problems(conn: str) -> list[str]:
    parts = connection_string_parts(conn)
    problems = []
    if not parts.get("accountendpoint", "").startswith("https://"):
        problems.append("AccountEndpoint must be an https:// URL")
    key = parts.get("accountkey", "")
    if not key:
        problems.append("has no AccountKey: copy the whole connection string (Keys in the portal)")
    else:
        try:
            b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            problems.append(
                "AccountKey is not a valid base64 key: copy it again (Keys in the portal)"
            )
    return problems


def _servicebus_string_problems(conn: str) -> list[str]:
    parts = connection_string_parts(conn)
    if "sharedaccesssignature" in parts:
        return []
    missing = [k for k in ("SharedAccessKeyName", "SharedAccessKey") if not parts.get(k.lower())]
    if missing:
        return [
            f"has no {' or '.join(missing)}: copy the whole connection string "
            "(Shared access policies in the portal)"
        ]
    return []


def _timeout(environ: Mapping[str, str], key: str, problems: list[str]) -> float:
    raw = environ.get(key, "").strip()
    default = TIMEOUT_DEFAULTS[key]
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= _MAX_TIMEOUT):
        problems.append(
            f"{key} must be seconds, more than 0 and at most {_MAX_TIMEOUT:g}, got {raw!r}"
        )
        return default
    return value


def _cosmos(environ: Mapping[str, str], problems: list[str]) -> CosmosConnection:
    conn, endpoint, credential, client_id = _connection(
        environ,
        COSMOS_CONNECTION,
        address_key="accountEndpoint",
        string_marker="AccountEndpoint=",
        string_problems=_cosmos_string_problems,
        address_problem=lambda v: None if v.startswith("https://") else "must be an https:// URL",
        problems=problems,
    )
    return CosmosConnection(conn, endpoint, credential, client_id)


def _service_bus(environ: Mapping[str, str], problems: list[str]) -> ServiceBusConnection:
    conn, namespace, credential, client_id = _connection(
        environ,
        SERVICEBUS_CONNECTION,
        address_key="fullyQualifiedNamespace",
        string_marker="Endpoint=sb://",
        string_problems=_servicebus_string_problems,
        address_problem=lambda v: (
            "must be a host name like '<ns>.servicebus.windows.net'" if "/" in v else None
        ),
        problems=problems,
    )
    return ServiceBusConnection(conn, namespace, credential, client_id)


def _name(environ: Mapping[str, str], key: str, problems: list[str]) -> str:
    value = environ.get(key, "").strip() or DEFAULTS[key]
    if len(value) > _MAX_ENTITY_NAME or any(c in value for c in "\\?#"):
        problems.append(f"{key} is not a valid name: {value!r}")
    return value


def _routes(environ: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    raw = environ.get(ROUTES, "").strip() or DEFAULTS[ROUTES]
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        problems.append(f"{ROUTES} must be a JSON object of event type -> topic/queue: {exc}")
        return {}
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items()
    ):
        problems.append(f"{ROUTES} must be a JSON object of event type -> topic/queue name")
        return {}
    return dict(parsed)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read every setting once; report all problems together, each naming its setting."""
    problems: list[str] = []
    settings = Settings(
        cosmos=_cosmos(environ, problems),
        service_bus=_service_bus(environ, problems),
        database=_name(environ, DATABASE, problems),
        containers=ContainerNames(
            orders=_name(environ, ORDERS_CONTAINER, problems),
            eventstore=_name(environ, EVENTSTORE_CONTAINER, problems),
            leases=_name(environ, LEASES_CONTAINER, problems),
            quarantine=_name(environ, QUARANTINE_CONTAINER, problems),
            inbox=_name(environ, INBOX_CONTAINER, problems),
        ),
        event_source=_name(environ, EVENT_SOURCE, problems),
        default_destination=_name(environ, DEFAULT_DESTINATION, problems),
        routes=MappingProxyType(_routes(environ, problems)),
        cosmos_timeout=_timeout(environ, COSMOS_TIMEOUT, problems),
        servicebus_timeout=_timeout(environ, SERVICEBUS_TIMEOUT, problems),
    )
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return settings
