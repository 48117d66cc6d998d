"""Typed settings read once from app settings (environment variables), validated together.

The declaration (``infra/topology.json``) says which settings exist: every container it
declares names its own setting (``"setting": "RELAY_ORDERS_CONTAINER"``), read here with the
declared name as the default; routes and the default destination come from the declaration
alone. What stays fixed in code is what every deployment has: the two connections, the
database, the CloudEvents source and the deadlines. Bicep sets every setting the declaration
names (a test pins that).

Connections follow the Functions bindings' convention (``events.connections``).
"""

from __future__ import annotations

import binascii
import math
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from events.connections import (
    CosmosConnection,
    Credential,
    ServiceBusConnection,
    connection_string_parts,
)
from events.deployment.topology import ContainerRole, Topology
from events.errors import SettingsError

__all__ = [
    "COSMOS_CONNECTION",
    "COSMOS_TIMEOUT",
    "DATABASE",
    "EVENT_SOURCE",
    "SERVICEBUS_CONNECTION",
    "SERVICEBUS_TIMEOUT",
    "TELEMETRY",
    "Settings",
    "app_settings",
    "load_settings",
    "setting_defaults",
]

COSMOS_CONNECTION: Final = "RELAY_COSMOS"
SERVICEBUS_CONNECTION: Final = "RELAY_SERVICEBUS"
DATABASE: Final = "RELAY_DATABASE"
EVENT_SOURCE: Final = "RELAY_EVENT_SOURCE"
#: Seconds one network call may take before it counts as unavailable (docs/decisions.md, 15).
COSMOS_TIMEOUT: Final = "RELAY_COSMOS_TIMEOUT"
SERVICEBUS_TIMEOUT: Final = "RELAY_SERVICEBUS_TIMEOUT"
#: Where traces and metrics go (events.hosts.telemetry): auto, azure-monitor, otlp, console, none.
TELEMETRY: Final = "RELAY_TELEMETRY"

_EVENT_SOURCE_DEFAULT: Final = "/integration-relay"

#: Deadlines: optional tuning, not infrastructure (so not among the settings Bicep sets).
TIMEOUT_DEFAULTS: Final[Mapping[str, float]] = MappingProxyType(
    {COSMOS_TIMEOUT: 30.0, SERVICEBUS_TIMEOUT: 30.0}
)
_MAX_TIMEOUT = 600.0

_MAX_ENTITY_NAME = 260


def setting_defaults(topology: Topology) -> dict[str, str]:
    """Every name setting the declaration implies, with its default: the database, the
    CloudEvents source, one per declared container (its declared name), and the topic and
    subscription settings of each declared consumer."""
    defaults = {DATABASE: topology.cosmos.database, EVENT_SOURCE: _EVENT_SOURCE_DEFAULT}
    defaults.update({c.setting: c.name for c in topology.cosmos.containers})
    for consumer in topology.service_bus.consumers:
        defaults[consumer.topic_setting] = consumer.topic
        defaults[consumer.subscription_setting] = consumer.subscription
    return defaults


def app_settings(topology: Topology) -> tuple[str, ...]:
    """Every app setting the code reads in Azure; ``NAME__x`` are the identity-based ones."""
    return (
        f"{COSMOS_CONNECTION}__accountEndpoint",
        f"{COSMOS_CONNECTION}__credential",
        f"{COSMOS_CONNECTION}__clientId",
        f"{SERVICEBUS_CONNECTION}__fullyQualifiedNamespace",
        f"{SERVICEBUS_CONNECTION}__credential",
        f"{SERVICEBUS_CONNECTION}__clientId",
        TELEMETRY,
        *setting_defaults(topology),
    )


@dataclass(frozen=True)
class Settings:
    cosmos: CosmosConnection
    service_bus: ServiceBusConnection
    database: str
    #: Declared container name -> the name in use (its setting, or the declared name).
    containers: Mapping[str, str]
    #: Declared container name -> the setting that names it.
    container_settings: Mapping[str, str]
    #: Role (leases, quarantine, inbox) -> declared container name, for single-role containers.
    roles: Mapping[str, str]
    event_source: str
    default_destination: str
    routes: Mapping[str, str] = field(default_factory=dict)
    #: Declared consumer name -> (topic, subscription) in use (their settings, or declared).
    consumer_entities: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    cosmos_timeout: float = TIMEOUT_DEFAULTS[COSMOS_TIMEOUT]
    servicebus_timeout: float = TIMEOUT_DEFAULTS[SERVICEBUS_TIMEOUT]

    @property
    def destinations(self) -> list[str]:
        """The default destination and every routed one, each once, in a stable order."""
        return list(dict.fromkeys([self.default_destination, *self.routes.values()]))

    def container(self, declared: str) -> str:
        """The name in use of a declared container."""
        return self.containers[declared]

    def role(self, role: ContainerRole) -> str:
        """The name in use of the container with this role (leases, quarantine, inbox)."""
        try:
            return self.containers[self.roles[role]]
        except KeyError:
            raise SettingsError(f"the declaration has no {role!r} container") from None

    def role_setting(self, role: ContainerRole) -> str:
        return self.container_settings[self.roles[role]]


def _credential(environ: Mapping[str, str], name: str, problems: list[str]) -> Credential:
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
) -> tuple[str | None, str | None, Credential, str | None]:
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
    return CosmosConnection(COSMOS_CONNECTION, conn, endpoint, credential, client_id)


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
    return ServiceBusConnection(SERVICEBUS_CONNECTION, conn, namespace, credential, client_id)


def _name(
    environ: Mapping[str, str], key: str, default: str, problems: list[str], *, path: bool = False
) -> str:
    """A resource name (or, with ``path``, a URI path such as the CloudEvents source)."""
    value = environ.get(key, "").strip() or default
    refused = "\\?#" if path else "\\?#/"
    if len(value) > _MAX_ENTITY_NAME or any(c in value for c in refused):
        problems.append(f"{key} is not a valid name: {value!r}")
    return value


def load_settings(environ: Mapping[str, str], topology: Topology) -> Settings:
    """Read every setting once; report all problems together, each naming its setting."""
    problems: list[str] = []
    containers = {
        c.name: _name(environ, c.setting, c.name, problems) for c in topology.cosmos.containers
    }
    single = ("leases", "quarantine", "inbox")
    settings = Settings(
        cosmos=_cosmos(environ, problems),
        service_bus=_service_bus(environ, problems),
        database=_name(environ, DATABASE, topology.cosmos.database, problems),
        containers=MappingProxyType(containers),
        container_settings=MappingProxyType(
            {c.name: c.setting for c in topology.cosmos.containers}
        ),
        roles=MappingProxyType(
            {c.role: c.name for c in topology.cosmos.containers if c.role in single}
        ),
        event_source=_name(environ, EVENT_SOURCE, _EVENT_SOURCE_DEFAULT, problems, path=True),
        default_destination=topology.service_bus.default_destination,
        routes=MappingProxyType(dict(topology.service_bus.routes)),
        consumer_entities=MappingProxyType(
            {
                c.name: (
                    _name(environ, c.topic_setting, c.topic, problems),
                    _name(environ, c.subscription_setting, c.subscription, problems),
                )
                for c in topology.service_bus.consumers
            }
        ),
        cosmos_timeout=_timeout(environ, COSMOS_TIMEOUT, problems),
        servicebus_timeout=_timeout(environ, SERVICEBUS_TIMEOUT, problems),
    )
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return settings
