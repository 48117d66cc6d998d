"""Create the Cosmos DB database and containers of ``infra/topology.json`` in a local emulator.

In Azure, Bicep creates them (``infra/modules/cosmos.bicep``); emulators have no Bicep, so the
same topology is applied here with the real azure-cosmos SDK. Running it twice changes nothing.
The lease container in particular must exist before ``func start``: the triggers set
``create_lease_container_if_not_exists=False``, as they must under Entra ID in Azure.

    python -m devstack.provision                      # Cosmos DB emulator on https://localhost:8081/
    python -m devstack.provision --connection-string "AccountEndpoint=...;AccountKey=...;"

``python -m events provision`` does the same with the app's settings (and for Azure with an
identity); this module stays for the dev stack and the emulator docs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from azure.cosmos import CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from events.adapters.cosmos.provision import (
    ContainerDefinition,
    provision_containers,
    provision_database,
)
from events.deployment.topology import Topology, load_topology
from events.errors import RelayError, SettingsError

__all__ = ["EMULATOR_CONNECTION_STRING", "ProvisionError", "main", "provision_cosmos"]

#: The Cosmos DB emulator's documented, public, well-known key (not a secret):
#: https://learn.microsoft.com/azure/cosmos-db/emulator#authentication
EMULATOR_CONNECTION_STRING: Final = (
    "AccountEndpoint=https://localhost:8081/;"
    "AccountKey=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==;"
)


class ProvisionError(RuntimeError):
    """The account holds a container that cannot be brought in line with the topology."""


def provision_cosmos(client: CosmosClient, topology: Topology) -> tuple[str, ...]:
    """Create the topology's database and every container (partition key, default TTL).

    Idempotent: existing containers are kept (their default TTL is corrected); a container whose
    partition key differs raises ProvisionError. Returns the container names, in topology order.
    The work is ``events.adapters.cosmos.provision``'s, which ``python -m events provision``
    uses too.
    """
    cosmos = topology.cosmos
    try:
        database, _ = provision_database(client, cosmos.database)
        provision_containers(database, container_definitions(topology))
    except SettingsError as exc:
        raise ProvisionError(str(exc)) from None
    return tuple(spec.name for spec in cosmos.containers)


def container_definitions(topology: Topology) -> list[ContainerDefinition]:
    """The topology's containers under their declared names."""
    return [
        ContainerDefinition(spec.name, spec.partition_key, spec.default_ttl)
        for spec in topology.cosmos.containers
    ]


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
    except (CosmosHttpResponseError, ProvisionError, RelayError) as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return 1
    print(f"database {topology.cosmos.database}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
