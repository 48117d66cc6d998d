"""Create a database and its containers (partition key, default TTL), and read back what exists.

``provision_containers`` is idempotent: a container that exists with the declared partition
key is kept (its default TTL is corrected when it differs), a missing one is created, and each
is reported as ``created``, ``updated`` or ``unchanged``. A container whose partition key
differs raises SettingsError: a partition key is fixed at creation, changing it means a new
container and a copy, which is not something to do behind an operator's back.

Under Entra ID the data plane cannot create databases or containers (403, substatus 5300:
https://learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac#permission-model); in Azure
they come from Bicep (``infra/modules/cosmos.bicep``), and this module then only verifies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from azure.cosmos import CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from events.adapters.cosmos.errors import (
    CREDENTIALS_REFUSED_STATUS,
    location_of,
    translate_cosmos_errors,
)
from events.errors import SettingsError

__all__ = [
    "ContainerDefinition",
    "ProvisionAction",
    "ProvisionOutcome",
    "existing_containers",
    "provision_containers",
    "provision_database",
]

ProvisionAction = Literal["created", "updated", "unchanged"]

_CREATE_HINT = (
    "the identity may not create it through the data plane (Entra ID): create it with "
    "Bicep (infra/modules/cosmos.bicep), or provision with a key"
)


@dataclass(frozen=True)
class ContainerDefinition:
    """One container as declared: its name in use, partition key path and default TTL
    (-1: items never expire unless they say so; None: TTL off)."""

    name: str
    partition_key: str
    default_ttl: int | None = None


@dataclass(frozen=True)
class ProvisionOutcome:
    kind: Literal["database", "container"]
    name: str
    action: ProvisionAction
    #: What changed or was checked, for the operator (partition key, TTL).
    detail: str = ""


def provision_database(client: CosmosClient, name: str) -> tuple[DatabaseProxy, ProvisionOutcome]:
    """The database ``name``, created when missing."""
    database = client.get_database_client(name)
    where = location_of(database)
    try:
        with translate_cosmos_errors("read database", where=where):
            database.read()
    except CosmosResourceNotFoundError:
        with _refused("create database", where):
            database = client.create_database(id=name)
        return database, ProvisionOutcome("database", name, "created")
    return database, ProvisionOutcome("database", name, "unchanged")


def provision_containers(
    database: DatabaseProxy, definitions: Iterable[ContainerDefinition]
) -> list[ProvisionOutcome]:
    """Bring each container in line with its definition, in order (see the module docstring)."""
    return [_ensure(database, definition) for definition in definitions]


def existing_containers(
    database: DatabaseProxy, names: Sequence[str]
) -> dict[str, tuple[str, ...] | None]:
    """Each container's partition key paths, or None when it does not exist. SettingsError
    when the database does not exist or the credentials are refused; StoreUnavailableError
    when Cosmos DB does not answer in time."""
    where = location_of(database)
    try:
        with _refused("read database", where):
            database.read()
    except CosmosResourceNotFoundError:
        raise SettingsError(
            f"database '{database.id}' does not exist at {where}", status=404, resource=where
        ) from None
    found: dict[str, tuple[str, ...] | None] = {}
    for name in names:
        container = database.get_container_client(name)
        try:
            with _refused("read container", location_of(container)):
                properties = container.read()
        except CosmosResourceNotFoundError:
            found[name] = None
        else:
            found[name] = tuple(properties.get("partitionKey", {}).get("paths", []))
    return found


def _ensure(database: DatabaseProxy, definition: ContainerDefinition) -> ProvisionOutcome:
    container = database.get_container_client(definition.name)
    where = location_of(container)
    key = PartitionKey(path=definition.partition_key)
    ttl = _describe_ttl(definition.default_ttl)
    try:
        with _refused("read container", where):
            properties = container.read()
    except CosmosResourceNotFoundError:
        with _refused("create container", where, hint=_CREATE_HINT):
            database.create_container(
                id=definition.name, partition_key=key, default_ttl=definition.default_ttl
            )
        return ProvisionOutcome(
            "container", definition.name, "created", f"{definition.partition_key}, {ttl}"
        )
    paths = list(properties.get("partitionKey", {}).get("paths", []))
    if paths != [definition.partition_key]:
        raise SettingsError(
            f"container {database.id}/{definition.name} has partition key "
            f"{', '.join(paths) or '(none)'}, the declaration says {definition.partition_key}: "
            "a partition key is fixed at creation; delete the container (or copy it to a new "
            "one) or fix the declaration",
            resource=where,
        )
    if properties.get("defaultTtl") == definition.default_ttl:
        return ProvisionOutcome(
            "container", definition.name, "unchanged", f"{definition.partition_key}, {ttl}"
        )
    was = _describe_ttl(properties.get("defaultTtl"))
    with _refused("replace container", where, hint=_CREATE_HINT):
        database.replace_container(container, partition_key=key, default_ttl=definition.default_ttl)
    return ProvisionOutcome(
        "container", definition.name, "updated", f"{definition.partition_key}, {ttl} (was {was})"
    )


def _describe_ttl(ttl: object) -> str:
    if ttl is None:
        return "TTL off"
    if ttl == -1:
        return "TTL on, no default expiry"
    return f"TTL {ttl} s"


@contextmanager
def _refused(what: str, where: str, *, hint: str = "check the key or the role") -> Iterator[None]:
    """Cosmos errors of one call: transient ones become StoreUnavailableError (by
    ``translate_cosmos_errors``), refused credentials a SettingsError naming the resource and
    what to do; 404 and the rest go through for the caller."""
    try:
        with translate_cosmos_errors(what, where=where):
            yield
    except CosmosHttpResponseError as exc:
        if exc.status_code in CREDENTIALS_REFUSED_STATUS:
            raise SettingsError(
                f"{what}: {where} refused ({exc.status_code}): {hint}",
                status=exc.status_code,
                resource=where,
            ) from None
        raise
