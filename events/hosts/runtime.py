"""The composition root: settings read once, clients and relays built once per process.

Hosts (the Functions triggers, the change-feed processor, the CLI) ask this module for a
relay; they never build clients themselves. ``check_resources`` is the start-up check of the
command-line hosts: every container and destination exists, the keys are accepted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from events.core.consumer import Inbox
from events.core.handling import ConsumerStore
from events.core.inbox import TransactionalInbox
from events.core.messages import Router
from events.core.publisher import Publisher
from events.core.quarantine import QuarantineAdmin, QuarantineStore
from events.core.relay import Feed, Relay
from events.deployment.catalog import Deployment, FeedDefinition, load_deployment
from events.deployment.settings import COSMOS_CONNECTION, DATABASE, Settings, load_settings
from events.errors import TransientError
from events.hosts.consumers import Consumer, build_consumer

if TYPE_CHECKING:
    from events.adapters.servicebus import ServiceBusPublisher

__all__ = ["Runtime", "build_feed", "check_resources", "current"]


def build_feed(definition: FeedDefinition, settings: Settings, deployment: Deployment) -> Feed:
    container = settings.container(definition.container)
    return Feed(
        name=definition.function_name,
        container=container,
        partition_key_path=definition.partition_key_path,
        sources=definition.sources,
        source_uri=f"{settings.event_source.rstrip('/')}/{settings.database}/{container}",
        contracts=deployment.contracts,
    )


@dataclass
class Runtime:
    """Everything one process needs to relay batches, created once."""

    settings: Settings
    deployment: Deployment
    publisher: Publisher
    quarantine: QuarantineStore
    relays: Mapping[str, Relay]
    #: Listing and deleting quarantine records (the Cosmos store is both); None in tests
    #: that only relay.
    admin: QuarantineAdmin | None = None
    #: The declared consumers' inbox and own containers (declared container name -> store);
    #: None in runtimes that only relay.
    inbox: Inbox | None = None
    consumer_stores: Mapping[str, ConsumerStore] = field(default_factory=dict)
    #: The transactional consumers' own containers as transactional inboxes (container name).
    transactional_inboxes: Mapping[str, TransactionalInbox] = field(default_factory=dict)
    _consumers: dict[str, Consumer] = field(default_factory=dict, repr=False)
    _consumers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def relay(self, feed_name: str) -> Relay:
        return self.relays[feed_name]

    def consumer(self, name: str) -> Consumer:
        """The declared consumer ``name``, built on first use (a consumer that cannot be built
        fails its own function, not the relay)."""
        with self._consumers_lock:
            if name not in self._consumers:
                definition = self.deployment.consumer(name)
                self._consumers[name] = build_consumer(
                    definition,
                    self.inbox,
                    self.consumer_stores[definition.container],
                    self.transactional_inboxes.get(definition.container),
                )
            return self._consumers[name]

    @classmethod
    def assemble(
        cls,
        settings: Settings,
        deployment: Deployment,
        publisher: Publisher,
        quarantine: QuarantineStore,
        admin: QuarantineAdmin | None = None,
        *,
        inbox: Inbox | None = None,
        consumer_stores: Mapping[str, ConsumerStore] | None = None,
        transactional_inboxes: Mapping[str, TransactionalInbox] | None = None,
    ) -> Runtime:
        router = Router(default=settings.default_destination, routes=settings.routes)
        relays = {
            d.function_name: Relay(
                build_feed(d, settings, deployment), publisher, quarantine, router
            )
            for d in deployment.feeds
        }
        return cls(
            settings=settings,
            deployment=deployment,
            publisher=publisher,
            quarantine=quarantine,
            relays=relays,
            admin=admin,
            inbox=inbox,
            consumer_stores=dict(consumer_stores or {}),
            transactional_inboxes=dict(transactional_inboxes or {}),
        )

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        verify_tls: bool = True,
        deployment: Deployment | None = None,
    ) -> Runtime:
        """Build from app settings and the declaration (default: the one shipped with the
        app). ``verify_tls=False`` only for a loopback dev server."""
        # Adapters are imported here so that pure users of the package never load the SDKs.
        from events.adapters import servicebus  # noqa: PLC0415
        from events.adapters.cosmos.client import cosmos_client  # noqa: PLC0415
        from events.adapters.cosmos.consumerstore import CosmosConsumerStore  # noqa: PLC0415
        from events.adapters.cosmos.inbox import CosmosTransactionalInbox  # noqa: PLC0415
        from events.adapters.cosmos.stores import CosmosInbox, CosmosQuarantine  # noqa: PLC0415

        declared = deployment if deployment is not None else load_deployment()
        settings = load_settings(environ, declared.topology)
        client = cosmos_client(
            settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout
        )
        database = client.get_database_client(settings.database)
        quarantine = CosmosQuarantine(database.get_container_client(settings.role("quarantine")))
        publisher = servicebus.ServiceBusPublisher(
            servicebus.service_bus_client(settings.service_bus),
            timeout=settings.servicebus_timeout,
            endpoint=servicebus.endpoint_of(settings.service_bus),
            setting=settings.service_bus.setting,
        )
        inbox = (
            CosmosInbox(database.get_container_client(settings.role("inbox")))
            if "inbox" in settings.roles
            else None
        )
        stores = {
            d.container: CosmosConsumerStore(
                database.get_container_client(settings.container(d.container)),
                d.partition_key_path,
            )
            for d in declared.consumers
        }
        transactional = {
            d.container: CosmosTransactionalInbox(
                database.get_container_client(settings.container(d.container)),
                partition_key_path=d.partition_key_path,
            )
            for d in declared.consumers
            if d.mode == "transactional"
        }
        return cls.assemble(
            settings,
            declared,
            publisher,
            quarantine,
            quarantine,
            inbox=inbox,
            consumer_stores=stores,
            transactional_inboxes=transactional,
        )


def check_resources(runtime: Runtime, *, verify_tls: bool = True) -> list[TransientError]:
    """Start-up check of a runtime built by ``from_environment``: the database, the monitored,
    leases and quarantine containers, and every destination (default and routes) exist.

    Raises SettingsError (one message naming the setting or resource and what to do) when
    something is missing or a key is refused. Returns the transient failures met (a server
    that did not answer within its deadline): the hosts retry those at run time.
    """
    from events.adapters.cosmos.client import check_containers, cosmos_client  # noqa: PLC0415
    from events.adapters.servicebus import ServiceBusPublisher  # noqa: PLC0415

    settings = runtime.settings
    problems: list[TransientError] = []
    client = cosmos_client(settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout)
    needed = [d.container for d in runtime.deployment.feeds]
    needed += [settings.roles["leases"], settings.roles["quarantine"]]
    containers = {settings.container_settings[c]: settings.container(c) for c in needed}
    try:
        check_containers(
            client.get_database_client(settings.database),
            containers,
            database_setting=DATABASE,
            connection_setting=COSMOS_CONNECTION,
        )
    except TransientError as exc:
        problems.append(exc)
    if isinstance(runtime.publisher, ServiceBusPublisher):
        problems += _probe_all(runtime.publisher, settings.destinations)
    return problems


def _probe_all(publisher: ServiceBusPublisher, destinations: list[str]) -> list[TransientError]:
    """Probe every destination at once (each within the publisher's deadline), so a silent
    broker delays start-up by one deadline, not one per destination."""
    outcomes: dict[str, BaseException | None] = {}

    def probe(destination: str) -> None:
        try:
            publisher.probe(destination)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcomes[destination] = exc
        else:
            outcomes[destination] = None

    threads = [
        threading.Thread(target=probe, args=(d,), name=f"probe-{d}", daemon=True)
        for d in destinations
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each probe is bounded by the publisher's deadline
    problems: list[TransientError] = []
    for destination in destinations:
        error = outcomes.get(destination)
        if isinstance(error, TransientError):
            problems.append(error)
        elif error is not None:
            raise error  # SettingsError (or a bug): for the caller
    return problems


_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime:
    """The process-wide runtime, built from the environment on first use."""
    global _current  # noqa: PLW0603 - one runtime per worker process, by design
    with _lock:
        if _current is None:
            _current = Runtime.from_environment(os.environ)
        return _current
