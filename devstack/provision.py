"""Create the Cosmos DB database and containers of ``infra/topology.json`` in a local emulator.

In Azure, Bicep creates them (``infra/modules/cosmos.bicep``); emulators have no Bicep, so the
same topology is applied here with the real azure-cosmos SDK. Running it twice changes nothing.
The lease container in particular must exist before ``func start``: the triggers set
``create_lease_container_if_not_exists=False``, as they must under Entra ID in Azure.

    python -m devstack.provision                      # Cosmos DB emulator on https://localhost:8081/
    python -m devstack.provision --connection-string "AccountEndpoint=...;AccountKey=...;"
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from azure.cosmos import CosmosClient, PartitionKey
from azure.cosmos.exceptions import CosmosHttpResponseError

from events.deployment.topology import ContainerSpec, Topology, load_topology

__all__ = ["EMULATOR_CONNECTION_STRING", "ProvisionError", "main", "provision_cosmos"]

#: The Cosmos DB emulator's documented, public, well-known key (not a secret):
#: https://learn.microsoft.com/azure/cosmos-db/emulator#authentication
EMULATOR_CONNECTION_STRING: Final = (
    "AccountEndpoint=https://localhost:8081/;"
    "AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;"
)


class ProvisionError(RuntimeError):
    """The account holds a container that cannot be brought in line with the topology."""


def _ensure_container(client: CosmosClient, database_name: str, spec: ContainerSpec) -> None:
    database = client.get_database_client(database_name)
    container = database.create_container_if_not_exists(
        id=spec.name,
        partition_key=PartitionKey(path=spec.partition_key),
        default_ttl=spec.default_ttl,
    )
    properties = container.read()
    paths = properties.get("partitionKey", {}).get("paths", [])
    if paths != [spec.partition_key]:
        # A partition key is fixed at creation; changing it means a new container and a copy.
        raise ProvisionError(
            f"container {database_name}/{spec.name} has partition key {paths}, "
            f"the topology says {spec.partition_key!r}; delete it or fix the topology"
        )
    if properties.get("defaultTtl") != spec.default_ttl:
        database.replace_container(
            container,
            partition_key=PartitionKey(path=spec.partition_key),
            default_ttl=spec.default_ttl,
        )


def provision_cosmos(client: CosmosClient, topology: Topology) -> tuple[str, ...]:
    """Create the topology's database and every container (partition key, default TTL).

    Idempotent: existing containers are kept (their default TTL is corrected); a container whose
    partition key differs raises ProvisionError. Returns the container names, in topology order.
    """
    cosmos = topology.cosmos
    client.create_database_if_not_exists(id=cosmos.database)
    for spec in cosmos.containers:
        _ensure_container(client, cosmos.database, spec)
    return tuple(spec.name for spec in cosmos.containers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.provision",
        description="Create the topology's Cosmos DB database and containers in an emulator.",
    )
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("RELAY_COSMOS") or EMULATOR_CONNECTION_STRING,
        help="Cosmos DB connection string (default: $RELAY_COSMOS, else the emulator's)",
    )
    parser.add_argument("--topology", type=Path, default=None, help="topology.json to apply")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="skip TLS verification (only for a local emulator whose certificate is not trusted)",
    )
    args = parser.parse_args(argv)
    topology = load_topology() if args.topology is None else load_topology(args.topology)
    client = CosmosClient.from_connection_string(
        args.connection_string, connection_verify=not args.insecure
    )
    try:
        names = provision_cosmos(client, topology)
    except (CosmosHttpResponseError, ProvisionError) as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return 1
    print(f"database {topology.cosmos.database}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
