"""``python -m events provision``: create the declaration's database and containers.

Same settings as the app: ``RELAY_COSMOS`` (a connection string: the dev server with
``--insecure-local``, an emulator) or ``RELAY_COSMOS__accountEndpoint`` (Azure, with an
identity), ``RELAY_DATABASE`` and each container's own setting for its name in use. Each
container gets the declared partition key and default TTL. Idempotent: a second run changes
nothing and says so. A container that exists with another partition key is refused with one
line (exit 2): a partition key cannot be changed in place.

Service Bus entities are not created here: the local broker declares them itself from the
declaration when it starts, the emulator from ``infra/emulator/Config.json``, Azure from Bicep.
The command says which applies.

Exit status: 0 done (or nothing to do), 2 a configuration problem (one line naming it),
1 Cosmos DB did not answer in time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from events.connections import ServiceBusConnection, connection_string_parts
from events.deployment.catalog import load_deployment
from events.deployment.settings import SERVICEBUS_CONNECTION, Settings, load_settings
from events.deployment.topology import Topology
from events.errors import RelayError, SettingsError

__all__ = ["main", "service_bus_note"]

_PROG = "python -m events provision"
#: Stands in for an unset Service Bus setting: provisioning needs only Cosmos DB.
_NO_SERVICE_BUS = "Endpoint=sb://unset/;SharedAccessKeyName=unset;SharedAccessKey=unset"


def service_bus_note(connection: ServiceBusConnection | None) -> str:
    """What provisioning means for Service Bus with this connection (nothing is done)."""
    if connection is None:
        return f"service bus: {SERVICEBUS_CONNECTION} is not set; nothing to do here"
    if connection.connection_string:
        parts = connection_string_parts(connection.connection_string)
        if parts.get("usedevelopmentemulator", "").lower() == "true":
            return (
                "service bus: nothing to create: the local broker declares the entities from "
                "the declaration when it starts (the emulator from infra/emulator/Config.json)"
            )
    return (
        "service bus: entities come from Bicep (infra/modules/servicebus.bicep, azd provision); "
        "python -m events check verifies them"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Create the database and containers of the declaration (partition keys, "
        "default TTLs) with the app's settings. Idempotent.",
    )
    parser.add_argument(
        "--declaration",
        type=Path,
        default=None,
        help="topology file (default: the one shipped with the app, infra/topology.json)",
    )
    parser.add_argument(
        "--insecure-local",
        action="store_true",
        help="do not verify TLS (a loopback dev server with a self-signed certificate)",
    )
    return parser


def _settings(
    environ: Mapping[str, str], args: argparse.Namespace
) -> tuple[Topology, Settings, bool]:
    """The declaration, the app's settings, and whether Service Bus is configured at all."""
    topology = load_deployment(args.declaration).topology
    configured = any(key.startswith(SERVICEBUS_CONNECTION) for key in environ)
    values = dict(environ) if configured else {**environ, SERVICEBUS_CONNECTION: _NO_SERVICE_BUS}
    return topology, load_settings(values, topology), configured


def provision(environ: Mapping[str, str], args: argparse.Namespace) -> list[str]:
    """Apply the declaration; the lines to print."""
    # Adapters are imported here so that importing the host stays cheap.
    from events.adapters.cosmos.client import cosmos_client  # noqa: PLC0415
    from events.adapters.cosmos.provision import (  # noqa: PLC0415
        ContainerDefinition,
        provision_containers,
        provision_database,
    )

    topology, settings, bus_configured = _settings(environ, args)
    in_use: dict[str, str] = {}
    for spec in topology.cosmos.containers:
        name = settings.container(spec.name)
        if name in in_use:
            # One container cannot have two partition keys or two TTLs: refuse, change nothing.
            raise SettingsError(
                f"{spec.setting} and {in_use[name]} both name container {name!r}: "
                "each declared container needs its own",
                setting=spec.setting,
            )
        in_use[name] = spec.setting
    verify_tls = not args.insecure_local
    client = cosmos_client(settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout)
    database, outcome = provision_database(client, settings.database)
    outcomes = [outcome]
    outcomes += provision_containers(
        database,
        [
            ContainerDefinition(settings.container(spec.name), spec.partition_key, spec.default_ttl)
            for spec in topology.cosmos.containers
        ],
    )
    lines = [
        f"{o.kind} {o.name}: {o.action}" + (f" ({o.detail})" if o.detail else "") for o in outcomes
    ]
    changed = [o for o in outcomes if o.action != "unchanged"]
    if changed:
        counts = {a: sum(o.action == a for o in outcomes) for a in ("created", "updated")}
        lines.append(
            f"cosmos db: {counts['created']} created, {counts['updated']} updated, "
            f"{len(outcomes) - len(changed)} unchanged"
        )
    else:
        lines.append("cosmos db: nothing to change, everything matches the declaration")
    lines.append(service_bus_note(settings.service_bus if bus_configured else None))
    return lines


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    if args.insecure_local:
        from events.adapters.cosmos.client import quiet_loopback_tls_warnings  # noqa: PLC0415

        quiet_loopback_tls_warnings()
    try:
        for line in provision(os.environ, args):
            print(line, flush=True)
    except SettingsError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"{_PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
