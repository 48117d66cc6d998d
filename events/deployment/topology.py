"""The deployment topology: one JSON file read by Bicep, the local broker, the emulator
config generator and the app's setting defaults.

The file lives at ``infra/topology.json``. This module only parses and validates it; it does
no I/O beyond reading the file it is given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from events.errors import SettingsError

__all__ = [
    "ConsumerSpec",
    "ContainerSpec",
    "CorrelationFilter",
    "FeedSpec",
    "QueueSpec",
    "RuleSpec",
    "SqlFilter",
    "SubscriptionSpec",
    "TopicSpec",
    "Topology",
    "iso_duration_seconds",
    "load_topology",
]

#: The source kinds a feed can list; anything else is refused when the file is loaded.
SOURCE_KINDS = ("outbox", "cdc", "eventstore")
ContainerRole = Literal["monitored", "leases", "quarantine", "inbox", "consumer"]
#: How a declared consumer records what it handled (docs/decisions.md, "A consumer in the
#: Functions app"): ``idempotent`` = the shared inbox, ``transactional`` = its own container.
ConsumerMode = Literal["idempotent", "transactional"]
#: Function names the Functions app registers besides the declared ones.
RESERVED_FUNCTIONS = ("quarantine_expiry", "feed_lag")
_FUNCTION_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,126}$"
_SETTING_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,126}$"
#: ``package.module:function``, each part a Python identifier.
_HANDLER_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"

_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


def iso_duration_seconds(value: str) -> int:
    """Seconds in an ISO 8601 duration of days/hours/minutes/seconds (``P14D``, ``PT30M``)."""
    match = _ISO_DURATION.match(value)
    if match is None or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(f"not an ISO 8601 duration of D/H/M/S: {value!r}")
    parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    return ((parts["d"] * 24 + parts["h"]) * 60 + parts["m"]) * 60 + parts["s"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class CdcRuleSpec(_Spec):
    """Change data capture of one document type, as data: which contracts, which fields.

    Contracts are named by event type and ``version`` (both events use the same version).
    ``fields`` is the allow-list copied into the upserted event; ``idField`` receives the
    document id; a document whose ``deletedFlag`` field is true becomes the deleted event.
    """

    document_type: str = Field(alias="documentType", min_length=1)
    upserted: str = Field(min_length=1)
    deleted: str = Field(min_length=1)
    version: int = Field(default=1, ge=1)
    id_field: str = Field(alias="idField", min_length=1)
    fields: tuple[str, ...]
    deleted_flag: str = Field(default="deleted", alias="deletedFlag", min_length=1)


class FeedSpec(_Spec):
    function: str = Field(pattern=_FUNCTION_NAME)
    lease_prefix: str = Field(alias="leasePrefix", min_length=1)
    sources: tuple[str, ...] = Field(min_length=1)
    cdc: tuple[CdcRuleSpec, ...] = ()


class ContainerSpec(_Spec):
    name: str
    role: ContainerRole
    setting: str
    partition_key: str = Field(alias="partitionKey")
    default_ttl: int = Field(alias="defaultTtl")
    feed: FeedSpec | None = None


class CosmosSpec(_Spec):
    database: str
    outbox_ttl_seconds: int = Field(alias="outboxTtlSeconds", gt=0)
    containers: tuple[ContainerSpec, ...]

    def by_role(self, role: ContainerRole) -> tuple[ContainerSpec, ...]:
        return tuple(c for c in self.containers if c.role == role)

    def one(self, role: ContainerRole) -> ContainerSpec:
        found = self.by_role(role)
        if len(found) != 1:
            raise ValueError(f"topology needs exactly one {role!r} container, has {len(found)}")
        return found[0]


class CorrelationFilter(_Spec):
    type: Literal["correlation"]
    subject: str | None = None
    correlation_id: str | None = Field(default=None, alias="correlationId")
    content_type: str | None = Field(default=None, alias="contentType")
    session_id: str | None = Field(default=None, alias="sessionId")
    properties: dict[str, str] = Field(default_factory=dict)


class SqlFilter(_Spec):
    type: Literal["sql"]
    expression: str


class RuleSpec(_Spec):
    name: str
    filter: Annotated[CorrelationFilter | SqlFilter, Field(discriminator="type")]


def _valid_duration(value: str) -> str:
    iso_duration_seconds(value)
    return value


IsoDuration = Annotated[str, AfterValidator(_valid_duration)]


class _Delivery(_Spec):
    """How a queue or subscription hands out messages."""

    requires_session: bool = Field(alias="requiresSession")
    max_delivery_count: int = Field(alias="maxDeliveryCount", ge=1)
    lock_duration: IsoDuration = Field(alias="lockDuration")
    dead_lettering_on_message_expiration: bool = Field(alias="deadLetteringOnMessageExpiration")
    default_message_time_to_live: IsoDuration = Field(alias="defaultMessageTimeToLive")


class _Entity(_Spec):
    """What a queue or topic accepts: the relay sends to these, with duplicate detection."""

    name: str
    requires_duplicate_detection: bool = Field(alias="requiresDuplicateDetection")
    duplicate_detection_history_time_window: IsoDuration = Field(
        alias="duplicateDetectionHistoryTimeWindow"
    )
    default_message_time_to_live: IsoDuration = Field(alias="defaultMessageTimeToLive")


class SubscriptionSpec(_Delivery):
    name: str
    rules: tuple[RuleSpec, ...] = ()


class TopicSpec(_Entity):
    subscriptions: tuple[SubscriptionSpec, ...] = ()


class QueueSpec(_Entity, _Delivery):
    pass


class ConsumerSpec(_Spec):
    """A consumer of a topic subscription, run as one Service Bus-triggered function.

    ``topicSetting`` and ``subscriptionSetting`` are the app settings naming the topic and the
    subscription in use (the bindings read ``%SETTING%``); ``handler`` is
    ``package.module:function``; ``container`` is the consumer's own Cosmos DB container (role
    ``consumer``), the store its handler writes to.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    function: str = Field(pattern=_FUNCTION_NAME)
    topic: str = Field(min_length=1)
    subscription: str = Field(min_length=1)
    topic_setting: str = Field(alias="topicSetting", pattern=_SETTING_NAME)
    subscription_setting: str = Field(alias="subscriptionSetting", pattern=_SETTING_NAME)
    handler: str = Field(pattern=_HANDLER_PATH)
    mode: ConsumerMode = "idempotent"
    container: str = Field(min_length=1)


class ServiceBusSpec(_Spec):
    max_message_size_kb: int = Field(alias="maxMessageSizeKb", gt=0)
    default_destination: str = Field(alias="defaultDestination")
    routes: dict[str, str] = Field(default_factory=dict)
    topics: tuple[TopicSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    consumers: tuple[ConsumerSpec, ...] = ()

    def subscription(self, topic: str, name: str) -> SubscriptionSpec | None:
        for declared in self.topics:
            if declared.name == topic:
                return next((s for s in declared.subscriptions if s.name == name), None)
        return None

    def entity_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.topics) | frozenset(q.name for q in self.queues)


class Topology(_Spec):
    cosmos: CosmosSpec
    service_bus: ServiceBusSpec = Field(alias="serviceBus")

    def model_post_init(self, __context: object) -> None:
        entities = self.service_bus.entity_names()
        for destination in (
            self.service_bus.default_destination,
            *self.service_bus.routes.values(),
        ):
            if destination not in entities:
                raise ValueError(f"route destination {destination!r} is not a topic or queue")
        for role in ("leases", "quarantine"):  # each must exist exactly once
            self.cosmos.one(role)
        if self.cosmos.one("leases").partition_key != "/id":
            raise ValueError("the lease container's partition key must be /id")
        _unique("container name", [c.name for c in self.cosmos.containers])
        _unique("container setting", [c.setting for c in self.cosmos.containers])
        feeds = [c.feed for c in self.cosmos.containers if c.feed is not None]
        _unique("feed function name", [f.function for f in feeds])
        _unique("feed lease prefix", [f.lease_prefix for f in feeds])
        for container in self.cosmos.containers:
            if container.feed is not None and container.role != "monitored":
                raise ValueError(
                    f"container {container.name!r}: only monitored containers have a feed"
                )
            if container.feed is None and container.role == "monitored":
                raise ValueError(
                    f"container {container.name!r}: a monitored container needs a feed"
                )
            if container.feed is not None:
                _check_feed(container.name, container.feed)
        _check_consumers(self, [f.function for f in feeds])

    def monitored(self) -> tuple[tuple[ContainerSpec, FeedSpec], ...]:
        """Each monitored container with its feed, in file order."""
        return tuple(
            (c, c.feed) for c in self.cosmos.containers if c.role == "monitored" and c.feed
        )


def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def _check_feed(container: str, feed: FeedSpec) -> None:
    """The feed's shape alone; its contracts are checked against a registry by the catalog."""
    where = f"container {container!r}"
    for kind in feed.sources:
        if kind not in SOURCE_KINDS:
            raise ValueError(
                f"{where}: unknown source kind {kind!r} (known: {', '.join(SOURCE_KINDS)})"
            )
    _unique(f"source kind in {where}:", list(feed.sources))
    if ("cdc" in feed.sources) != bool(feed.cdc):
        raise ValueError(f"{where}: a feed lists the source 'cdc' exactly when it has cdc rules")
    _unique(f"CDC document type in {where}:", [rule.document_type for rule in feed.cdc])


def _check_consumers(topology: Topology, feed_functions: list[str]) -> None:
    """Each consumer names a declared session-enabled subscription and its own container."""
    consumers = topology.service_bus.consumers
    _unique("consumer name", [c.name for c in consumers])
    _unique(
        "function name (feeds, consumers and the timers share one app)",
        [*feed_functions, *RESERVED_FUNCTIONS, *(c.function for c in consumers)],
    )
    _unique(
        "setting name (containers and consumers share the app settings)",
        [
            *(c.setting for c in topology.cosmos.containers),
            *(s for c in consumers for s in (c.topic_setting, c.subscription_setting)),
        ],
    )
    containers = {c.name: c for c in topology.cosmos.containers}
    topics = {t.name for t in topology.service_bus.topics}
    for consumer in consumers:
        where = f"consumer {consumer.name!r}"
        if consumer.topic not in topics:
            raise ValueError(
                f"{where}: unknown topic {consumer.topic!r} (declared: {', '.join(sorted(topics))})"
            )
        subscription = topology.service_bus.subscription(consumer.topic, consumer.subscription)
        if subscription is None:
            raise ValueError(
                f"{where}: topic {consumer.topic!r} has no subscription {consumer.subscription!r}"
            )
        if not subscription.requires_session:
            raise ValueError(
                f"{where}: subscription {consumer.topic}/{consumer.subscription} is not "
                "session-enabled (requiresSession): the consumer relies on per-aggregate order"
            )
        container = containers.get(consumer.container)
        if container is None or container.role != "consumer":
            raise ValueError(
                f"{where}: container {consumer.container!r} is not a declared container "
                "with role 'consumer'"
            )


DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "infra" / "topology.json"


def load_topology(path: Path = DEFAULT_TOPOLOGY) -> Topology:
    """Read and validate a topology file; a bad file raises SettingsError naming it."""
    raw: object = None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Topology.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(
            f"topology file {path} is invalid: {_describe(exc, raw)}", resource=str(path)
        ) from None
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise SettingsError(f"topology file {path} is invalid: {exc}", resource=str(path)) from None


def _describe(error: ValidationError, raw: object) -> str:
    """Pydantic's errors as one line: where in the file and what, naming the container when
    the problem is inside one (``container 'orders': feed.function: ...``)."""
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if location[:2] == ["cosmos", "containers"] and len(location) > 2:
            name = _container_name(raw, location[2])
            location = location[3:]
            message = f"{'.'.join(location)}: {message}" if location else message
            problems.append(f"container {name!r}: {message}")
        elif location[:2] == ["serviceBus", "consumers"] and len(location) > 2:
            name = _consumer_name(raw, location[2])
            location = location[3:]
            message = f"{'.'.join(location)}: {message}" if location else message
            problems.append(f"consumer {name!r}: {message}")
        else:
            problems.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(problems)


def _container_name(raw: object, index: str) -> str:
    try:
        name = raw["cosmos"]["containers"][int(index)]["name"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError, ValueError):
        return f"#{index}"
    return str(name)


def _consumer_name(raw: object, index: str) -> str:
    try:
        name = raw["serviceBus"]["consumers"][int(index)]["name"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError, ValueError):
        return f"#{index}"
    return str(name)
