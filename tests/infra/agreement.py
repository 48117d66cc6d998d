"""Checks that a declaration, the Bicep and the Functions app built from it agree.

Each check takes the declaration (a loaded ``Topology``) and the functions registered from it
(``RegisteredApp``) and raises AssertionError naming what disagrees. The infra tests run them on
``infra/topology.json`` and the shipped ``function_app``; the "Make it yours" walkthrough test
runs the same checks on a modified copy of the declaration, with the Bicep unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from events.deployment.settings import SERVICEBUS_CONNECTION, app_settings, setting_defaults
from events.deployment.topology import Topology, iso_duration_seconds
from tests.infra.bicep import INFRA, bicep_files, code, declarations, properties, string_literals
from tests.infra.bicep import text as node_text

__all__ = [
    "AGREEMENT_CHECKS",
    "AppSettings",
    "Check",
    "RegisteredApp",
    "bicep_app_settings",
    "check_app_settings_cover_every_binding_expression_and_connection",
    "check_app_settings_cover_every_setting_the_code_reads",
    "check_app_settings_use_the_managed_identity_everywhere",
    "check_bicep_code_names_no_feed_of_the_declaration",
    "check_bicep_hard_codes_no_entity_name",
    "check_consumer_receiver_role_scoped_to_each_subscription",
    "check_consumer_triggers_match_declared_consumers",
    "check_dedup_window_longer_than_max_retry_delay",
    "check_every_entity_is_a_relay_destination",
    "check_every_entity_requires_duplicate_detection",
    "check_lease_prefixes_unique_in_the_declaration",
    "check_outbox_ttl_longer_than_dedup_window",
    "check_quarantine_ttl_longer_than_outbox_ttl",
    "check_setting_defaults_equal_declared_names",
    "check_trigger_lease_prefixes_unique_per_lease_container",
    "check_triggers_match_feeds_and_leases",
    "feed_vocabulary",
]

MODULES = INFRA / "modules"
#: How the Bicep modules read the declared consumers (none declared: an empty list).
CONSUMERS_EXPRESSION = (
    "contains(topology.serviceBus, 'consumers') ? topology.serviceBus.consumers : []"
)
#: The Functions connection suffixes of an identity-based connection, per binding type.
_CONNECTION_ADDRESS = {"serviceBusTrigger": "fullyQualifiedNamespace"}


@dataclass(frozen=True)
class RegisteredApp:
    """What a Functions app registered: every binding (with its ``function``) and the retry
    policy of each function that has one, read through azure-functions' own objects."""

    bindings: tuple[Mapping[str, Any], ...]
    retry_policies: Mapping[str, Mapping[str, Any]]

    @classmethod
    def of(cls, functions: Iterable[Any]) -> RegisteredApp:
        """From ``FunctionApp.get_functions()`` (which may run only once per app)."""
        bindings: list[Mapping[str, Any]] = []
        policies: dict[str, Mapping[str, Any]] = {}
        for fn in functions:
            name = str(fn.get_function_name())
            spec = json.loads(fn.get_function_json())
            bindings.extend({"function": name, **binding} for binding in spec["bindings"])
            policy = fn.get_settings_dict("retry_policy")
            if policy:  # a timer has none: the host reruns a missed run
                policies[name] = dict(policy)
        return cls(tuple(bindings), policies)

    def triggers(self) -> list[Mapping[str, Any]]:
        return [b for b in self.bindings if b["type"] == "cosmosDBTrigger"]


Check = Callable[[Topology, RegisteredApp], None]


# --- Bicep names nothing the declaration declares --------------------------------------------


def _entity_names(topology: Topology) -> set[str]:
    bus = topology.service_bus
    names = {c.name for c in topology.cosmos.containers} | bus.entity_names()
    for topic in bus.topics:
        for sub in topic.subscriptions:
            names.add(sub.name)
            names.update(rule.name for rule in sub.rules)
    return names


def check_bicep_hard_codes_no_entity_name(topology: Topology, app: RegisteredApp) -> None:
    names = _entity_names(topology)
    hard_coded = set()
    for path in bicep_files():
        # `container.role == 'quarantine'` selects by topology role, which is not a name.
        source = re.sub(r"\.role\s*==\s*'[^']*'", ".role == x", path.read_text())
        hard_coded |= {(path.name, s) for s in string_literals(source.encode()) if s in names}
    assert hard_coded == set()


def feed_vocabulary(topology: Topology) -> set[str]:
    """What a declaration says about its feeds: each monitored container's name, setting,
    function and lease prefix, its CDC rules' document and event types, and the routed types."""
    words: set[str] = set(topology.service_bus.routes)
    for container, feed in topology.monitored():
        words |= {container.name, container.setting, feed.function, feed.lease_prefix}
        for rule in feed.cdc:
            words |= {rule.document_type, rule.upserted, rule.deleted}
    return words


def check_bicep_code_names_no_feed_of_the_declaration(
    topology: Topology, app: RegisteredApp
) -> None:
    """Bicep loops over the declaration: no feed of it is named anywhere in Bicep code
    (comments aside), so declaring a new one needs no Bicep edit."""
    named = set()
    for path in bicep_files():
        source = code(path.read_bytes())
        for word in feed_vocabulary(topology):
            if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", source):
                named.add((path.name, word))
    assert named == set()


# --- App settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSettings:
    names: frozenset[str]
    literal_values: dict[str, str]


def bicep_app_settings(topology: Topology) -> AppSettings:
    """Names the function app's siteConfig.appSettings sets, expanding the topology loop."""
    decls = {d.symbol: d for d in declarations(MODULES / "functionapp.bicep")}
    site = properties(decls["site"].body)
    site_config = properties(properties(site["properties"])["siteConfig"])
    assert node_text(site_config["appSettings"]) == (
        "concat(baseSettings, containerSettings, consumerTopicSettings, "
        "consumerSubscriptionSettings)"
    )

    loop_settings = decls["containerSettings"]
    assert loop_settings.loop is not None
    assert loop_settings.loop.iterable == "topology.cosmos.containers"
    item = properties(loop_settings.body)
    assert node_text(item["name"]) == f"{loop_settings.loop.variable}.setting"
    assert node_text(item["value"]) == f"{loop_settings.loop.variable}.name"
    names = {c.setting for c in topology.cosmos.containers}

    # One topic and one subscription setting per declared consumer, named by the declaration.
    assert node_text(decls["consumers"].value) == CONSUMERS_EXPRESSION
    for symbol, setting, entity in (
        ("consumerTopicSettings", "topicSetting", "topic"),
        ("consumerSubscriptionSettings", "subscriptionSetting", "subscription"),
    ):
        loop = decls[symbol].loop
        assert loop is not None
        assert loop.iterable == "consumers"
        item = properties(decls[symbol].body)
        assert node_text(item["name"]) == f"{loop.variable}.{setting}"
        assert node_text(item["value"]) == f"{loop.variable}.{entity}"
    for consumer in topology.service_bus.consumers:
        names |= {consumer.topic_setting, consumer.subscription_setting}

    literal_values: dict[str, str] = {}
    array = decls["baseSettings"].value
    assert array is not None
    assert array.type == "array"
    for entry in (c for c in array.children if c.type == "object"):
        props = properties(entry)
        name = node_text(props["name"]).strip("'")
        names.add(name)
        value = props["value"]
        if value.type == "string" and not any(c.type == "interpolation" for c in value.children):
            literal_values[name] = node_text(value).strip("'")
    return AppSettings(frozenset(names), literal_values)


def check_app_settings_cover_every_setting_the_code_reads(
    topology: Topology, app: RegisteredApp
) -> None:
    settings = bicep_app_settings(topology)
    assert set(app_settings(topology)) - settings.names == set()


def check_app_settings_use_the_managed_identity_everywhere(
    topology: Topology, app: RegisteredApp
) -> None:
    settings = bicep_app_settings(topology)
    required = {
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    }
    assert required <= settings.names
    assert {"AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__accountName"} & (
        settings.names
    )
    credentials = {k: v for k, v in settings.literal_values.items() if k.endswith("__credential")}
    assert credentials == {
        "AzureWebJobsStorage__credential": "managedidentity",
        "RELAY_COSMOS__credential": "managedidentity",
        "RELAY_SERVICEBUS__credential": "managedidentity",
    }
    # Flex Consumption keeps the runtime in functionAppConfig; these settings are rejected there.
    assert {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & settings.names == set()
    # No connection string with a key: only the identity-based variants.
    assert {"RELAY_COSMOS", "RELAY_SERVICEBUS", "AzureWebJobsStorage"} & settings.names == set()


def check_app_settings_cover_every_binding_expression_and_connection(
    topology: Topology, app: RegisteredApp
) -> None:
    settings = bicep_app_settings(topology)
    referenced: set[str] = set()
    for binding in app.bindings:
        for value in binding.values():
            if isinstance(value, str):
                referenced.update(re.findall(r"%([^%]+)%", value))
        address = _CONNECTION_ADDRESS.get(str(binding["type"]), "accountEndpoint")
        for key in ("connection", "leaseConnection"):
            if key in binding:
                referenced.add(f"{binding[key]}__{address}")
                referenced.add(f"{binding[key]}__credential")
                referenced.add(f"{binding[key]}__clientId")
    assert referenced
    assert referenced - settings.names == set()


# --- Function bindings -----------------------------------------------------------------------


def _resolve(topology: Topology, value: str) -> str:
    """A binding value with its ``%SETTING%`` replaced by the setting's default."""
    match = re.fullmatch(r"%([^%]+)%", value)
    return setting_defaults(topology)[match.group(1)] if match else value


def check_triggers_match_feeds_and_leases(topology: Topology, app: RegisteredApp) -> None:
    triggers = app.triggers()
    leases = topology.cosmos.one("leases")
    monitored = {feed.function: container for container, feed in topology.monitored()}
    assert {t["function"] for t in triggers} == set(monitored)
    for trigger in triggers:
        container = monitored[trigger["function"]]
        assert container.feed is not None
        assert _resolve(topology, trigger["databaseName"]) == topology.cosmos.database
        assert _resolve(topology, trigger["containerName"]) == container.name
        assert _resolve(topology, trigger["leaseDatabaseName"]) == topology.cosmos.database
        assert _resolve(topology, trigger["leaseContainerName"]) == leases.name
        assert trigger["leaseContainerPrefix"] == container.feed.lease_prefix
        # Under Entra ID the trigger cannot create it (403); Bicep does.
        assert trigger["createLeaseContainerIfNotExists"] is False


def check_consumer_triggers_match_declared_consumers(
    topology: Topology, app: RegisteredApp
) -> None:
    """One session-enabled serviceBusTrigger per declared consumer, on its topic and
    subscription through their settings, with the identity-based Service Bus connection."""
    triggers = [b for b in app.bindings if b["type"] == "serviceBusTrigger"]
    consumers = {c.function: c for c in topology.service_bus.consumers}
    assert {t["function"] for t in triggers} == set(consumers)
    for trigger in triggers:
        consumer = consumers[trigger["function"]]
        assert trigger["direction"] == "IN"
        assert trigger["isSessionsEnabled"] is True
        assert trigger["connection"] == SERVICEBUS_CONNECTION
        assert trigger["topicName"] == f"%{consumer.topic_setting}%"
        assert trigger["subscriptionName"] == f"%{consumer.subscription_setting}%"
        assert _resolve(topology, trigger["topicName"]) == consumer.topic
        assert _resolve(topology, trigger["subscriptionName"]) == consumer.subscription


def check_consumer_receiver_role_scoped_to_each_subscription(
    topology: Topology, app: RegisteredApp
) -> None:
    """The app's identity receives only where a declared consumer listens: Data Receiver on
    each consumer's subscription (an existing-resource loop over the consumers), on no topic,
    queue or namespace."""
    decls = {d.symbol: d for d in declarations(MODULES / "servicebus.bicep")}
    assert node_text(decls["consumers"].value) == CONSUMERS_EXPRESSION
    receivers = []
    for decl in decls.values():
        if decl.kind != "resource" or not decl.type.startswith(
            "Microsoft.Authorization/roleAssignments@"
        ):
            continue
        props = properties(properties(decl.body)["properties"])
        if node_text(props["principalId"]) != "appPrincipalId":
            continue
        if "serviceBusDataReceiver" in node_text(props["roleDefinitionId"]):
            receivers.append(decl)
    assert [d.symbol for d in receivers] == ["subscriptionReceivers"]
    [receiver] = receivers
    assert receiver.loop is not None
    assert receiver.loop.iterable == "consumers"
    # `for (consumer, i) in consumers`: the i-th consumer's own subscription, nothing wider.
    scope = node_text(properties(receiver.body)["scope"])
    assert re.fullmatch(r"consumerSubscriptions\[\w+\]", scope)
    target = decls["consumerSubscriptions"]
    assert target.existing
    assert target.type.split("@")[0] == "Microsoft.ServiceBus/namespaces/topics/subscriptions"
    assert target.loop is not None
    assert target.loop.iterable == "consumers"
    variable = target.loop.variable
    assert node_text(properties(target.body)["name"]) == (
        f"'${{namespace.name}}/${{{variable}.topic}}/${{{variable}.subscription}}'"
    )
    # Every declared consumer's subscription exists in the declaration Bicep loops over.
    for consumer in topology.service_bus.consumers:
        assert topology.service_bus.subscription(consumer.topic, consumer.subscription)


def check_trigger_lease_prefixes_unique_per_lease_container(
    topology: Topology, app: RegisteredApp
) -> None:
    triggers = app.triggers()
    keys = [
        (_resolve(topology, t["leaseContainerName"]), t.get("leaseContainerPrefix", ""))
        for t in triggers
    ]
    assert len(keys) == len(set(keys)) == len(topology.monitored())


def check_lease_prefixes_unique_in_the_declaration(topology: Topology, app: RegisteredApp) -> None:
    prefixes = [c.feed.lease_prefix for c in topology.cosmos.containers if c.feed]
    assert len(prefixes) == len(set(prefixes))


# --- Time relations --------------------------------------------------------------------------


def _timespan_seconds(value: str) -> int:
    hours, minutes, seconds = (int(part) for part in value.split(":"))
    return (hours * 60 + minutes) * 60 + seconds


def _dedup_windows(topology: Topology) -> dict[str, int]:
    bus = topology.service_bus
    windows = {
        t.name: iso_duration_seconds(t.duplicate_detection_history_time_window) for t in bus.topics
    }
    windows.update(
        {
            q.name: iso_duration_seconds(q.duplicate_detection_history_time_window)
            for q in bus.queues
        }
    )
    return windows


def check_dedup_window_longer_than_max_retry_delay(topology: Topology, app: RegisteredApp) -> None:
    # A batch retried after its maximum backoff republishes messages: the broker must still
    # remember their ids to drop the duplicates.
    policies = app.retry_policies
    assert policies
    longest = max(_timespan_seconds(p["maximum_interval"]) for p in policies.values())
    assert {p["strategy"] for p in policies.values()} == {"exponential_backoff"}
    short = {name: w for name, w in _dedup_windows(topology).items() if w <= longest}
    assert short == {}


def check_outbox_ttl_longer_than_dedup_window(topology: Topology, app: RegisteredApp) -> None:
    longest_window = max(_dedup_windows(topology).values())
    assert topology.cosmos.outbox_ttl_seconds > longest_window


def check_quarantine_ttl_longer_than_outbox_ttl(topology: Topology, app: RegisteredApp) -> None:
    # The quarantine holds whole documents (personal data): it must expire (-1 = never), but only
    # after the outbox TTL, the longest outage the relay survives, so a document quarantined at
    # the start of an outage is still there when operators look after it.
    (quarantine,) = topology.cosmos.by_role("quarantine")
    assert quarantine.default_ttl > topology.cosmos.outbox_ttl_seconds


# --- Service Bus entities and setting defaults -----------------------------------------------


def check_every_entity_requires_duplicate_detection(topology: Topology, app: RegisteredApp) -> None:
    bus = topology.service_bus
    flags = [t.requires_duplicate_detection for t in bus.topics]
    flags += [q.requires_duplicate_detection for q in bus.queues]
    assert flags
    assert all(flags)


def check_every_entity_is_a_relay_destination(topology: Topology, app: RegisteredApp) -> None:
    # servicebus.bicep grants the app Data Sender on every topic and queue; least privilege
    # holds only while each of them is somewhere the relay publishes.
    bus = topology.service_bus
    destinations = {bus.default_destination, *bus.routes.values()}
    assert bus.entity_names() == destinations


def check_setting_defaults_equal_declared_names(topology: Topology, app: RegisteredApp) -> None:
    expected = {c.setting: c.name for c in topology.cosmos.containers}
    expected["RELAY_DATABASE"] = topology.cosmos.database
    actual = {k: v for k, v in setting_defaults(topology).items() if k in expected}
    assert actual == expected


#: Every check above, for a declaration and the app built from it.
AGREEMENT_CHECKS: tuple[Check, ...] = (
    check_bicep_hard_codes_no_entity_name,
    check_bicep_code_names_no_feed_of_the_declaration,
    check_app_settings_cover_every_setting_the_code_reads,
    check_app_settings_use_the_managed_identity_everywhere,
    check_app_settings_cover_every_binding_expression_and_connection,
    check_triggers_match_feeds_and_leases,
    check_consumer_triggers_match_declared_consumers,
    check_consumer_receiver_role_scoped_to_each_subscription,
    check_trigger_lease_prefixes_unique_per_lease_container,
    check_lease_prefixes_unique_in_the_declaration,
    check_dedup_window_longer_than_max_retry_delay,
    check_outbox_ttl_longer_than_dedup_window,
    check_quarantine_ttl_longer_than_outbox_ttl,
    check_every_entity_requires_duplicate_detection,
    check_every_entity_is_a_relay_destination,
    check_setting_defaults_equal_declared_names,
)
