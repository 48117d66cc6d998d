"""infra/topology.json, the Bicep, the app's settings and the function bindings agree.

Bicep is read with tree-sitter (no Bicep CLI here): these tests check that Bicep iterates over
the loaded topology instead of naming entities, and that everything the app reads is set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from events.deployment.settings import app_settings, setting_defaults
from events.deployment.topology import Topology, iso_duration_seconds, load_topology
from events.deployment.topology import load_topology as _load_topology
from tests.infra.bicep import (
    INFRA,
    Declaration,
    bicep_files,
    declarations,
    properties,
    string_literals,
    text,
)

pytestmark = pytest.mark.infra

MODULES = INFRA / "modules"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


def _resources(module: str, resource_type: str) -> list[Declaration]:
    return [
        d
        for d in declarations(MODULES / module)
        if d.kind == "resource" and d.type.split("@")[0] == resource_type and not d.existing
    ]


def _only(module: str, resource_type: str) -> Declaration:
    (found,) = _resources(module, resource_type)
    return found


# --- Bicep iterates over the loaded topology -------------------------------------------------


@pytest.mark.parametrize(
    "module", ["cosmos.bicep", "servicebus.bicep", "functionapp.bicep", "alerts.bicep"]
)
def test_bicep_module_loads_the_topology_file(module: str) -> None:
    loaded = re.findall(r"loadJsonContent\('([^']+)'\)", (MODULES / module).read_text())
    assert loaded == ["../topology.json"]
    assert (MODULES / loaded[0]).resolve() == (INFRA / "topology.json").resolve()


@pytest.mark.parametrize(
    ("module", "resource_type", "variable", "iterable"),
    [
        (
            "cosmos.bicep",
            "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
            "container",
            "topology.cosmos.containers",
        ),
        (
            "servicebus.bicep",
            "Microsoft.ServiceBus/namespaces/topics",
            "topic",
            "topology.serviceBus.topics",
        ),
        (
            "servicebus.bicep",
            "Microsoft.ServiceBus/namespaces/queues",
            "queue",
            "topology.serviceBus.queues",
        ),
        (
            "servicebus-subscriptions.bicep",
            "Microsoft.ServiceBus/namespaces/topics/subscriptions",
            "subscription",
            "subscriptions",
        ),
        (
            "servicebus-rules.bicep",
            "Microsoft.ServiceBus/namespaces/topics/subscriptions/rules",
            "rule",
            "rules",
        ),
    ],
)
def test_bicep_entity_resource_loops_over_topology_and_takes_its_name(
    module: str, resource_type: str, variable: str, iterable: str
) -> None:
    resource = _only(module, resource_type)
    assert resource.loop is not None
    assert (resource.loop.variable, resource.loop.iterable) == (variable, iterable)
    assert text(properties(resource.body)["name"]) == f"{variable}.name"


def test_bicep_subscriptions_come_from_each_topology_topic() -> None:
    (module,) = [
        d
        for d in declarations(MODULES / "servicebus.bicep")
        if d.kind == "module" and d.type == "servicebus-subscriptions.bicep"
    ]
    assert module.loop is not None
    assert module.loop.iterable == "topology.serviceBus.topics"
    params = properties(properties(module.body)["params"])
    assert text(params["subscriptions"]) == f"{module.loop.variable}.subscriptions"


def test_bicep_rules_come_from_each_subscription() -> None:
    (module,) = [
        d
        for d in declarations(MODULES / "servicebus-subscriptions.bicep")
        if d.kind == "module" and d.type == "servicebus-rules.bicep"
    ]
    assert module.loop is not None
    assert module.loop.iterable == "subscriptions"
    params = properties(properties(module.body)["params"])
    assert text(params["rules"]) == f"{module.loop.variable}.rules"


def test_bicep_database_name_comes_from_topology() -> None:
    database = _only("cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts/sqlDatabases")
    assert text(properties(database.body)["name"]) == "topology.cosmos.database"


def test_bicep_cosmos_container_takes_partition_key_and_ttl_from_topology() -> None:
    container = _only(
        "cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"
    )
    resource = properties(properties(properties(container.body)["properties"])["resource"])
    assert text(resource["defaultTtl"]) == "container.defaultTtl"
    assert "container.partitionKey" in text(resource["partitionKey"])


def _entity_names(topology: Topology) -> set[str]:
    bus = topology.service_bus
    names = {c.name for c in topology.cosmos.containers} | bus.entity_names()
    for topic in bus.topics:
        for sub in topic.subscriptions:
            names.add(sub.name)
            names.update(rule.name for rule in sub.rules)
    return names


def test_bicep_files_hard_code_no_topology_entity_name(topology: Topology) -> None:
    names = _entity_names(topology)
    hard_coded = set()
    for path in bicep_files():
        # `container.role == 'quarantine'` selects by topology role, which is not a name.
        source = re.sub(r"\.role\s*==\s*'[^']*'", ".role == x", path.read_text())
        hard_coded |= {(path.name, s) for s in string_literals(source.encode()) if s in names}
    assert hard_coded == set()


@pytest.mark.parametrize(
    ("resource_type", "attribute"),
    [
        ("Microsoft.ServiceBus/namespaces/topics", "topic"),
        ("Microsoft.ServiceBus/namespaces/queues", "queue"),
    ],
)
def test_bicep_entity_duplicate_detection_forced_on_with_topology_window(
    resource_type: str, attribute: str
) -> None:
    entity = properties(properties(_only("servicebus.bicep", resource_type).body)["properties"])
    assert text(entity["requiresDuplicateDetection"]) == "true"
    assert text(entity["duplicateDetectionHistoryTimeWindow"]) == (
        f"{attribute}.duplicateDetectionHistoryTimeWindow"
    )
    assert text(entity["defaultMessageTimeToLive"]) == f"{attribute}.defaultMessageTimeToLive"


def test_bicep_subscription_takes_every_setting_from_topology() -> None:
    sub = _only(
        "servicebus-subscriptions.bicep", "Microsoft.ServiceBus/namespaces/topics/subscriptions"
    )
    props = properties(properties(sub.body)["properties"])
    for key in (
        "requiresSession",
        "maxDeliveryCount",
        "lockDuration",
        "deadLetteringOnMessageExpiration",
        "defaultMessageTimeToLive",
    ):
        assert text(props[key]) == f"subscription.{key}"


# --- App settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSettings:
    names: frozenset[str]
    literal_values: dict[str, str]


def _app_settings(topology: Topology) -> AppSettings:
    """Names the function app's siteConfig.appSettings sets, expanding the topology loop."""
    decls = {d.symbol: d for d in declarations(MODULES / "functionapp.bicep")}
    site = properties(decls["site"].body)
    site_config = properties(properties(site["properties"])["siteConfig"])
    assert text(site_config["appSettings"]) == "concat(baseSettings, containerSettings)"

    loop_settings = decls["containerSettings"]
    assert loop_settings.loop is not None
    assert loop_settings.loop.iterable == "topology.cosmos.containers"
    item = properties(loop_settings.body)
    assert text(item["name"]) == f"{loop_settings.loop.variable}.setting"
    assert text(item["value"]) == f"{loop_settings.loop.variable}.name"
    names = {c.setting for c in topology.cosmos.containers}

    literal_values: dict[str, str] = {}
    array = decls["baseSettings"].value
    assert array is not None
    assert array.type == "array"
    for entry in (c for c in array.children if c.type == "object"):
        props = properties(entry)
        name = text(props["name"]).strip("'")
        names.add(name)
        value = props["value"]
        if value.type == "string" and not any(c.type == "interpolation" for c in value.children):
            literal_values[name] = text(value).strip("'")
    return AppSettings(frozenset(names), literal_values)


def _functions() -> tuple[Any, ...]:
    # Shared with the other suites: FunctionApp.get_functions() may run only once per app.
    from tests.app_functions import registered_functions

    return registered_functions()


def _bindings() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for fn in _functions():
        spec = json.loads(fn.get_function_json())
        for binding in spec["bindings"]:
            found.append({"function": fn.get_function_name(), **binding})
    return found


def _retry_policies() -> dict[str, dict[str, Any]]:
    return {
        fn.get_function_name(): dict(fn.get_settings_dict("retry_policy"))
        for fn in _functions()
        if fn.get_settings_dict("retry_policy")  # the timer has none: a missed run is rerun
    }


def test_bicep_app_settings_cover_every_setting_the_code_reads(topology: Topology) -> None:
    settings = _app_settings(topology)
    assert set(app_settings(topology)) - settings.names == set()


def test_bicep_app_settings_use_the_managed_identity_everywhere(topology: Topology) -> None:
    settings = _app_settings(topology)
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


def test_bicep_app_settings_cover_every_binding_expression_and_connection(
    topology: Topology,
) -> None:
    settings = _app_settings(topology)
    referenced: set[str] = set()
    for binding in _bindings():
        for value in binding.values():
            if isinstance(value, str):
                referenced.update(re.findall(r"%([^%]+)%", value))
        for key in ("connection", "leaseConnection"):
            if key in binding:
                referenced.add(f"{binding[key]}__accountEndpoint")
                referenced.add(f"{binding[key]}__credential")
                referenced.add(f"{binding[key]}__clientId")
    assert referenced
    assert referenced - settings.names == set()


def _resolve(value: str) -> str:
    match = re.fullmatch(r"%([^%]+)%", value)
    return setting_defaults(_load_topology())[match.group(1)] if match else value


def test_trigger_bindings_match_topology_feeds_and_leases(topology: Topology) -> None:
    triggers = [b for b in _bindings() if b["type"] == "cosmosDBTrigger"]
    leases = topology.cosmos.one("leases")
    monitored = {c.feed.function: c for c in topology.cosmos.by_role("monitored") if c.feed}
    assert {t["function"] for t in triggers} == set(monitored)
    for trigger in triggers:
        container = monitored[trigger["function"]]
        assert container.feed is not None
        assert _resolve(trigger["databaseName"]) == topology.cosmos.database
        assert _resolve(trigger["containerName"]) == container.name
        assert _resolve(trigger["leaseDatabaseName"]) == topology.cosmos.database
        assert _resolve(trigger["leaseContainerName"]) == leases.name
        assert trigger["leaseContainerPrefix"] == container.feed.lease_prefix
        # Under Entra ID the trigger cannot create it (403); Bicep does.
        assert trigger["createLeaseContainerIfNotExists"] is False


def test_trigger_lease_prefixes_unique_per_lease_container() -> None:
    triggers = [b for b in _bindings() if b["type"] == "cosmosDBTrigger"]
    keys = [
        (_resolve(t["leaseContainerName"]), t.get("leaseContainerPrefix", "")) for t in triggers
    ]
    assert len(keys) == len(set(keys)) == 2


def test_topology_lease_prefixes_unique(topology: Topology) -> None:
    prefixes = [c.feed.lease_prefix for c in topology.cosmos.containers if c.feed]
    assert len(prefixes) == len(set(prefixes))


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


def test_topology_dedup_window_longer_than_max_retry_delay(topology: Topology) -> None:
    # A batch retried after its maximum backoff republishes messages: the broker must still
    # remember their ids to drop the duplicates.
    policies = _retry_policies()
    assert policies
    longest = max(_timespan_seconds(p["maximum_interval"]) for p in policies.values())
    assert {p["strategy"] for p in policies.values()} == {"exponential_backoff"}
    short = {name: w for name, w in _dedup_windows(topology).items() if w <= longest}
    assert short == {}


def test_topology_outbox_ttl_longer_than_dedup_window(topology: Topology) -> None:
    longest_window = max(_dedup_windows(topology).values())
    assert topology.cosmos.outbox_ttl_seconds > longest_window


def test_topology_quarantine_ttl_set_and_longer_than_outbox_ttl(topology: Topology) -> None:
    # The quarantine holds whole documents (personal data): it must expire (-1 = never), but only
    # after the outbox TTL, the longest outage the relay survives, so a document quarantined at
    # the start of an outage is still there when operators look after it.
    (quarantine,) = topology.cosmos.by_role("quarantine")
    assert quarantine.default_ttl > topology.cosmos.outbox_ttl_seconds


def test_topology_every_topic_and_queue_requires_duplicate_detection(topology: Topology) -> None:
    bus = topology.service_bus
    flags = [t.requires_duplicate_detection for t in bus.topics]
    flags += [q.requires_duplicate_detection for q in bus.queues]
    assert flags
    assert all(flags)


def test_topology_every_entity_is_a_relay_destination(topology: Topology) -> None:
    # servicebus.bicep grants the app Data Sender on every topic and queue; least privilege
    # holds only while each of them is somewhere the relay publishes.
    bus = topology.service_bus
    destinations = {bus.default_destination, *bus.routes.values()}
    assert bus.entity_names() == destinations


def test_settings_defaults_equal_topology_names(topology: Topology) -> None:
    expected = {c.setting: c.name for c in topology.cosmos.containers}
    expected["RELAY_DATABASE"] = topology.cosmos.database
    actual = {k: v for k, v in setting_defaults(topology).items() if k in expected}
    assert actual == expected


def test_settings_event_source_default_equals_bicep_parameter_default() -> None:
    # The event source is not in the topology: main.bicep has it as a parameter.
    main = (INFRA / "main.bicep").read_text()
    (bicep_default,) = re.findall(r"param eventSource string = '([^']*)'", main)
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    default = setting_defaults(_load_topology())["RELAY_EVENT_SOURCE"]
    assert bicep_default == default
    assert parameters["eventSource"]["value"].endswith(f"={default}}}")
