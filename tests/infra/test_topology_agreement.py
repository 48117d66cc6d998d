"""infra/topology.json, the Bicep, the app's settings and the function bindings agree.

Bicep is read with tree-sitter (no Bicep CLI here): these tests check that Bicep iterates over
the loaded topology instead of naming entities, and that everything the app reads is set.
The checks that depend on the declaration live in ``tests.infra.agreement``: here they run on
the shipped declaration and app, in the walkthrough test on a modified copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from events.deployment.settings import setting_defaults
from events.deployment.topology import Topology, load_topology
from tests.app_functions import registered_functions
from tests.infra.agreement import (
    AGREEMENT_CHECKS,
    RegisteredApp,
    check_app_settings_cover_every_binding_expression_and_connection,
    check_app_settings_cover_every_setting_the_code_reads,
    check_app_settings_use_the_managed_identity_everywhere,
    check_bicep_code_names_no_feed_of_the_declaration,
    check_bicep_hard_codes_no_entity_name,
    check_consumer_receiver_role_scoped_to_each_subscription,
    check_consumer_triggers_match_declared_consumers,
    check_dedup_window_longer_than_max_retry_delay,
    check_every_entity_is_a_relay_destination,
    check_every_entity_requires_duplicate_detection,
    check_lease_prefixes_unique_in_the_declaration,
    check_outbox_ttl_longer_than_dedup_window,
    check_quarantine_ttl_longer_than_outbox_ttl,
    check_setting_defaults_equal_declared_names,
    check_trigger_lease_prefixes_unique_per_lease_container,
    check_triggers_match_feeds_and_leases,
)
from tests.infra.bicep import INFRA, Declaration, declarations, properties, text

pytestmark = pytest.mark.infra

MODULES = INFRA / "modules"
SOURCE = Path(__file__).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


@pytest.fixture(scope="module")
def shipped() -> RegisteredApp:
    """The functions ``function_app`` registers from the shipped declaration."""
    return RegisteredApp.of(registered_functions())


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


def test_bicep_files_hard_code_no_topology_entity_name(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_bicep_hard_codes_no_entity_name(topology, shipped)


def test_bicep_code_names_no_monitored_container_setting_function_or_event(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_bicep_code_names_no_feed_of_the_declaration(topology, shipped)


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


# --- App settings, bindings and time relations (shared with the walkthrough test) ------------


def test_bicep_app_settings_cover_every_setting_the_code_reads(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_app_settings_cover_every_setting_the_code_reads(topology, shipped)


def test_bicep_app_settings_use_the_managed_identity_everywhere(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_app_settings_use_the_managed_identity_everywhere(topology, shipped)


def test_bicep_app_settings_cover_every_binding_expression_and_connection(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_app_settings_cover_every_binding_expression_and_connection(topology, shipped)


def test_trigger_bindings_match_topology_feeds_and_leases(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_triggers_match_feeds_and_leases(topology, shipped)


def test_consumer_triggers_match_declared_consumers_topic_subscription_and_sessions(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_consumer_triggers_match_declared_consumers(topology, shipped)


def test_bicep_consumer_receiver_role_scoped_to_each_consumer_subscription_only(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_consumer_receiver_role_scoped_to_each_subscription(topology, shipped)


def test_trigger_lease_prefixes_unique_per_lease_container(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_trigger_lease_prefixes_unique_per_lease_container(topology, shipped)


def test_topology_lease_prefixes_unique(topology: Topology, shipped: RegisteredApp) -> None:
    check_lease_prefixes_unique_in_the_declaration(topology, shipped)


def test_topology_dedup_window_longer_than_max_retry_delay(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_dedup_window_longer_than_max_retry_delay(topology, shipped)


def test_topology_outbox_ttl_longer_than_dedup_window(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_outbox_ttl_longer_than_dedup_window(topology, shipped)


def test_topology_quarantine_ttl_set_and_longer_than_outbox_ttl(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_quarantine_ttl_longer_than_outbox_ttl(topology, shipped)


def test_topology_every_topic_and_queue_requires_duplicate_detection(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_every_entity_requires_duplicate_detection(topology, shipped)


def test_topology_every_entity_is_a_relay_destination(
    topology: Topology, shipped: RegisteredApp
) -> None:
    check_every_entity_is_a_relay_destination(topology, shipped)


def test_settings_defaults_equal_topology_names(topology: Topology, shipped: RegisteredApp) -> None:
    check_setting_defaults_equal_declared_names(topology, shipped)


def test_agreement_checks_are_all_run_on_the_shipped_declaration() -> None:
    # A check added to AGREEMENT_CHECKS without a test here would only run on the copy.
    called = set(re.findall(r"^    (check_\w+)\(topology, shipped\)", SOURCE, re.MULTILINE))
    assert called == {check.__name__ for check in AGREEMENT_CHECKS}


def test_settings_event_source_default_equals_bicep_parameter_default() -> None:
    # The event source is not in the topology: main.bicep has it as a parameter.
    main = (INFRA / "main.bicep").read_text()
    (bicep_default,) = re.findall(r"param eventSource string = '([^']*)'", main)
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    default = setting_defaults(load_topology())["RELAY_EVENT_SOURCE"]
    assert bicep_default == default
    assert parameters["eventSource"]["value"].endswith(f"={default}}}")
