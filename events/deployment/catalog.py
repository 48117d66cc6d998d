"""This deployment, derived from the declaration (``infra/topology.json``) alone.

Each monitored container with a feed becomes one Functions trigger and one change-feed
processor name: its function name, lease prefix, container setting and partition key path come
from the file, and its sources from the feed's ``sources`` and ``cdc`` rules, checked against
the registered contracts. A declaration the contracts cannot satisfy (an unknown contract, a
field missing from its contract, a system field) is refused with one message naming the file,
the container and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from events.core.sources import CdcRule, CdcSource, EventStoreSource, OutboxSource, Source
from events.deployment.contracts import ContractRegistry, default_registry
from events.deployment.topology import (
    DEFAULT_TOPOLOGY,
    CdcRuleSpec,
    ContainerSpec,
    FeedSpec,
    Topology,
    load_topology,
)
from events.errors import MappingError, SettingsError

__all__ = ["Deployment", "FeedDefinition", "build_feeds", "load_deployment"]


@dataclass(frozen=True)
class FeedDefinition:
    function_name: str
    #: The monitored container's declared name (its name in use comes from its setting).
    container: str
    container_setting: str
    lease_prefix: str
    partition_key_path: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Deployment:
    """The declaration file, what it declares, the registered contracts and the feeds."""

    path: Path
    topology: Topology
    contracts: ContractRegistry
    feeds: tuple[FeedDefinition, ...]

    def feed(self, function_name: str) -> FeedDefinition:
        for definition in self.feeds:
            if definition.function_name == function_name:
                return definition
        raise KeyError(f"no feed named {function_name!r} in {self.path}")


def _cdc_rule(spec: CdcRuleSpec, contracts: ContractRegistry) -> CdcRule:
    return CdcRule(
        document_type=spec.document_type,
        upserted=contracts.get(spec.upserted, spec.version),
        deleted=contracts.get(spec.deleted, spec.version),
        id_field=spec.id_field,
        fields=spec.fields,
        deleted_flag=spec.deleted_flag,
    )


def _sources(feed: FeedSpec, contracts: ContractRegistry) -> tuple[Source, ...]:
    sources: list[Source] = []
    for kind in feed.sources:
        if kind == "outbox":
            sources.append(OutboxSource())
        elif kind == "cdc":
            sources.append(CdcSource([_cdc_rule(rule, contracts) for rule in feed.cdc]))
        else:  # the loader admits only known kinds
            sources.append(EventStoreSource())
    return tuple(sources)


def _definition(
    container: ContainerSpec, feed: FeedSpec, contracts: ContractRegistry, path: Path
) -> FeedDefinition:
    try:
        sources = _sources(feed, contracts)
    except (MappingError, ValueError) as exc:
        raise SettingsError(
            f"topology file {path} is invalid: container {container.name!r}: {exc}",
            resource=str(path),
            ids={"container": container.name},
        ) from None
    return FeedDefinition(
        function_name=feed.function,
        container=container.name,
        container_setting=container.setting,
        lease_prefix=feed.lease_prefix,
        partition_key_path=container.partition_key,
        sources=sources,
    )


def load_deployment(
    path: Path | None = None, contracts: ContractRegistry | None = None
) -> Deployment:
    """Read and check a declaration (default: the one shipped with the app) against the
    contracts (default: this deployment's registry). SettingsError names the file, the
    container and the problem."""
    where = path if path is not None else DEFAULT_TOPOLOGY
    registry = contracts if contracts is not None else default_registry()
    topology = load_topology(where)
    feeds = tuple(_definition(c, f, registry, where) for c, f in topology.monitored())
    return Deployment(path=where, topology=topology, contracts=registry, feeds=feeds)


def build_feeds(
    path: Path | None = None, contracts: ContractRegistry | None = None
) -> tuple[FeedDefinition, ...]:
    """The feeds a declaration file describes, checked against ``contracts``."""
    return load_deployment(path, contracts).feeds
