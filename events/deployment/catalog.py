"""This deployment, derived from the declaration (``infra/topology.json``) alone.

Each monitored container with a feed becomes one Functions trigger and one change-feed
processor name: its function name, lease prefix, container setting and partition key path come
from the file, and its sources from the feed's ``sources`` and ``cdc`` rules, checked against
the registered contracts. A declaration the contracts cannot satisfy (an unknown contract, a
field missing from its contract, a system field) is refused with one message naming the file,
the container and the problem.

Each declared consumer becomes one Service Bus-triggered function: its handler path is imported
here, so a handler that cannot be imported is refused at start-up like a bad feed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from events.core.handling import Handler
from events.core.sources import CdcRule, CdcSource, EventStoreSource, OutboxSource, Source
from events.deployment.contracts import ContractRegistry, default_registry
from events.deployment.topology import (
    DEFAULT_TOPOLOGY,
    CdcRuleSpec,
    ConsumerMode,
    ConsumerSpec,
    ContainerSpec,
    FeedSpec,
    Topology,
    load_topology,
)
from events.errors import MappingError, SettingsError

__all__ = [
    "ConsumerDefinition",
    "Deployment",
    "FeedDefinition",
    "build_feeds",
    "load_deployment",
    "resolve_handler",
]


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
class ConsumerDefinition:
    name: str
    function_name: str
    topic: str
    subscription: str
    topic_setting: str
    subscription_setting: str
    mode: ConsumerMode
    #: The consumer's own container: declared name, and the partition key path of its documents.
    container: str
    partition_key_path: str
    handler_path: str
    handler: Handler


@dataclass(frozen=True)
class Deployment:
    """The declaration file, what it declares, the registered contracts and the feeds."""

    path: Path
    topology: Topology
    contracts: ContractRegistry
    feeds: tuple[FeedDefinition, ...]
    consumers: tuple[ConsumerDefinition, ...] = ()

    def consumer(self, name: str) -> ConsumerDefinition:
        for definition in self.consumers:
            if definition.name == name:
                return definition
        raise KeyError(f"no consumer named {name!r} in {self.path}")

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


def resolve_handler(path: str) -> Handler:
    """The function a ``package.module:function`` path names; ValueError says why not."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is this declaration's problem
        raise ValueError(
            f"handler {path!r}: module {module_name!r} cannot be imported: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise ValueError(f"handler {path!r}: {module_name} has no function {attribute!r}")
    return handler  # type: ignore[no-any-return]


def _consumer(spec: ConsumerSpec, topology: Topology, path: Path) -> ConsumerDefinition:
    try:
        handler = resolve_handler(spec.handler)
    except ValueError as exc:
        raise SettingsError(
            f"topology file {path} is invalid: consumer {spec.name!r}: {exc}",
            resource=str(path),
            ids={"consumer": spec.name},
        ) from None
    container = next(c for c in topology.cosmos.containers if c.name == spec.container)
    return ConsumerDefinition(
        name=spec.name,
        function_name=spec.function,
        topic=spec.topic,
        subscription=spec.subscription,
        topic_setting=spec.topic_setting,
        subscription_setting=spec.subscription_setting,
        mode=spec.mode,
        container=container.name,
        partition_key_path=container.partition_key,
        handler_path=spec.handler,
        handler=handler,
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
    consumers = tuple(_consumer(c, topology, where) for c in topology.service_bus.consumers)
    return Deployment(
        path=where, topology=topology, contracts=registry, feeds=feeds, consumers=consumers
    )


def build_feeds(
    path: Path | None = None, contracts: ContractRegistry | None = None
) -> tuple[FeedDefinition, ...]:
    """The feeds a declaration file describes, checked against ``contracts``."""
    return load_deployment(path, contracts).feeds
