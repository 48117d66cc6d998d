"""Security defaults of the infra (docs/security.md): quarantine retention and its alert, least
privilege Cosmos DB data roles, diagnostic settings, workspace local auth, optional network
isolation, and a dev stack that listens on loopback only. Bicep is read with tree-sitter."""

from __future__ import annotations

import json
import re
from typing import get_args

import pytest

from events.deployment.topology import ContainerRole, Topology, load_topology
from tests.infra.bicep import INFRA, REPO, Declaration, declarations, properties, text

pytestmark = pytest.mark.infra

MODULES = INFRA / "modules"
DAY = 86400


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


def _decls(module: str) -> dict[str, Declaration]:
    path = INFRA / module if module == "main.bicep" else MODULES / module
    return {d.symbol: d for d in declarations(path)}


def _resources(module: str, resource_type: str) -> list[Declaration]:
    return [
        d
        for d in _decls(module).values()
        if d.kind == "resource" and d.type.split("@")[0] == resource_type and not d.existing
    ]


def _props(decl: Declaration, *path: str) -> dict[str, str]:
    node = decl.body
    for key in path:
        node = properties(node)[key]
    return {k: text(v) for k, v in properties(node).items()}


# --- Quarantine retention --------------------------------------------------------------------


def test_monitoring_workspace_retention_covers_quarantine_ttl(topology: Topology) -> None:
    # Logs about a quarantined document (its WARNING line, who read it) must live as long as it.
    (quarantine,) = topology.cosmos.by_role("quarantine")
    source = (MODULES / "monitoring.bicep").read_text()
    (minimum,) = re.findall(
        r"@minValue\((\d+)\)\s*@maxValue\(\d+\)\s*param retentionInDays", source
    )
    (default,) = re.findall(r"param retentionInDays int = (\d+)", source)
    assert int(minimum) * DAY >= quarantine.default_ttl
    assert int(default) >= int(minimum)


def test_alerts_quarantine_waiting_alert_per_quarantine_container() -> None:
    (alert,) = [
        d
        for d in _resources("alerts.bicep", "Microsoft.Insights/metricAlerts")
        if "waiting" in d.symbol.lower()
    ]
    assert alert.loop is not None
    assert alert.loop.iterable == "topology.cosmos.containers"
    assert "container.role == 'quarantine'" in text(alert.body.parent if alert.body else None)
    source = text(alert.body)
    assert "metricName: 'DocumentCount'" in source
    assert "container.name" in source
    # Stays fired while documents wait; resolves when the container is drained.
    assert _props(alert, "properties")["autoMitigate"] == "true"


# --- Cosmos DB data-plane roles --------------------------------------------------------------

# https://learn.microsoft.com/azure/cosmos-db/nosql/reference-data-plane-security
_DOCUMENTED_ACTIONS = frozenset(
    {
        "Microsoft.DocumentDB/databaseAccounts/readMetadata",
        *(
            f"Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/{verb}"
            for verb in ("create", "read", "replace", "upsert", "delete")
        ),
        *(
            f"Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/{verb}"
            for verb in (
                "executeQuery",
                "readChangeFeed",
                "executeStoredProcedure",
                "manageConflicts",
            )
        ),
    }
)

_ITEMS = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/"
_CONTAINER = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/"

# What each use needs, and nothing more (docs/security.md has the reasons).
_EXPECTED_ROLES = {
    "metadataReaderRole": {"Microsoft.DocumentDB/databaseAccounts/readMetadata"},
    "changeFeedReaderRole": {f"{_CONTAINER}readChangeFeed", f"{_ITEMS}read"},
    "stateStoreRole": {
        *(f"{_ITEMS}{v}" for v in ("create", "read", "replace", "upsert", "delete")),
        f"{_CONTAINER}executeQuery",
        f"{_CONTAINER}readChangeFeed",
    },
    "inboxRole": {f"{_ITEMS}{v}" for v in ("read", "create", "replace", "upsert")},
    "consumerStoreRole": {
        f"{_ITEMS}{v}" for v in ("read", "create", "replace", "upsert", "delete")
    },
}


def _cosmos_variables() -> dict[str, str]:
    return {
        d.symbol: text(d.value).strip("'")
        for d in _decls("cosmos.bicep").values()
        if d.kind == "variable" and d.value is not None and d.value.type == "string"
    }


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], value.strip("'"))


def role_actions() -> dict[str, set[str]]:
    """Each custom role definition in cosmos.bicep -> its data actions, variables expanded."""
    variables = _cosmos_variables()
    found: dict[str, set[str]] = {}
    for decl in _resources(
        "cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions"
    ):
        props = properties(properties(decl.body)["properties"])
        assert text(props["type"]) == "'CustomRole'"
        (permission,) = [c for c in props["permissions"].children if c.type == "object"]
        actions = properties(permission)["dataActions"]
        found[decl.symbol] = {
            _expand(text(c), variables) if c.type == "string" else variables[text(c)]
            for c in actions.children
            if c.is_named
        }
    return found


def undocumented_or_wildcard(actions: set[str]) -> set[str]:
    return {a for a in actions if a not in _DOCUMENTED_ACTIONS or "*" in a}


def test_cosmos_custom_roles_hold_exactly_the_needed_actions() -> None:
    assert role_actions() == _EXPECTED_ROLES


def test_cosmos_custom_roles_use_only_documented_actions_without_wildcards() -> None:
    assert {name: undocumented_or_wildcard(a) for name, a in role_actions().items()} == {
        name: set() for name in _EXPECTED_ROLES
    }


def test_cosmos_action_check_flags_wildcard_and_unknown_action() -> None:
    assert undocumented_or_wildcard({f"{_ITEMS}*", f"{_CONTAINER}readEverything"}) == {
        f"{_ITEMS}*",
        f"{_CONTAINER}readEverything",
    }


def test_cosmos_every_container_role_mapped_to_a_custom_role() -> None:
    mapping = properties(_decls("cosmos.bicep")["roleForContainer"].value)
    assert set(mapping) == set(get_args(ContainerRole))
    assert {text(v).removesuffix(".id") for v in mapping.values()} <= set(_EXPECTED_ROLES)
    assert text(mapping["monitored"]) == "changeFeedReaderRole.id"


def test_cosmos_app_assignments_scoped_to_account_metadata_and_each_container() -> None:
    assignments = [
        d
        for d in _resources(
            "cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
        )
        if _props(d, "properties")["principalId"] == "appPrincipalId"
    ]
    scopes = {
        d.symbol: (_props(d, "properties")["roleDefinitionId"], _props(d, "properties")["scope"])
        for d in assignments
    }
    assert scopes == {
        "appMetadataReader": ("metadataReaderRole.id", "account.id"),
        "appContainerAccess": (
            "roleForContainer[container.role]",
            "'${databaseScope}/colls/${container.name}'",
        ),
    }
    loop = next(d for d in assignments if d.symbol == "appContainerAccess").loop
    assert loop is not None
    assert loop.iterable == "topology.cosmos.containers"


def test_cosmos_app_gets_no_builtin_role() -> None:
    source = (MODULES / "cosmos.bicep").read_text()
    app_blocks = re.findall(r"principalId: appPrincipalId\n(.*?)\n  }", source, re.DOTALL)
    assert app_blocks
    assert all("cosmosData" not in block for block in app_blocks)


# --- Diagnostic settings and the workspace -----------------------------------------------------


@pytest.mark.parametrize(
    ("module", "scopes"),
    [
        ("cosmos.bicep", {"account"}),
        ("servicebus.bicep", {"namespace"}),
        ("storage.bicep", {"storage", "blobService", "queueService", "tableService"}),
        ("functionapp.bicep", {"site"}),
    ],
)
def test_diagnostic_settings_send_each_resource_to_the_workspace(
    module: str, scopes: set[str]
) -> None:
    settings = _resources(module, "Microsoft.Insights/diagnosticSettings")
    found = set()
    for setting in settings:
        props = properties(properties(setting.body)["properties"])
        workspace = text(props["workspaceId"]) if "workspaceId" in props else ""
        if not workspace:  # properties given as a shared variable
            workspace = text(
                properties(_decls(module)[text(properties(setting.body)["properties"])].value)[
                    "workspaceId"
                ]
            )
        assert workspace == "workspaceId"
        found.add(text(properties(setting.body)["scope"]))
    assert found == scopes


def test_main_passes_the_workspace_to_every_diagnosed_module() -> None:
    modules = _decls("main.bicep")
    for symbol in ("cosmos", "serviceBus", "storage", "functionApp"):
        params = properties(properties(modules[symbol].body)["params"])
        assert text(params["workspaceId"]) == "monitoring.outputs.workspaceId"


def test_monitoring_workspace_local_auth_disabled() -> None:
    (workspace,) = _resources("monitoring.bicep", "Microsoft.OperationalInsights/workspaces")
    assert _props(workspace, "properties", "features")["disableLocalAuth"] == "true"


# --- Network isolation -------------------------------------------------------------------------


def test_main_network_isolation_parameter_defaults_false_and_comes_from_azd_env() -> None:
    main = (INFRA / "main.bicep").read_text()
    assert re.search(r"^param networkIsolation bool = false$", main, re.MULTILINE)
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["networkIsolation"]["value"] == "${RELAY_NETWORK_ISOLATION=false}"


def test_main_network_module_deployed_only_when_isolated() -> None:
    network = _decls("main.bicep")["network"]
    assert network.type == "modules/network.bicep"
    assert network.body is not None
    if_statement = network.body.parent
    assert if_statement is not None
    assert if_statement.type == "if_statement"
    assert "networkIsolation" in text(if_statement.children[1])
    params = properties(properties(network.body)["params"])
    assert {k: text(v) for k, v in params.items() if k.endswith("Id")} == {
        "cosmosAccountId": "cosmos.outputs.accountId",
        "serviceBusNamespaceId": "serviceBus.outputs.namespaceId",
        "storageAccountId": "storage.outputs.id",
    }


def private_endpoint_groups(source: str) -> set[tuple[str, str]]:
    """(target parameter, group id) of every private endpoint the network module declares."""
    return set(re.findall(r"target: (\w+)\s+groupId: '([^']+)'", source))


def test_network_private_endpoints_for_cosmos_servicebus_and_storage_services() -> None:
    source = (MODULES / "network.bicep").read_text()
    assert private_endpoint_groups(source) == {
        ("cosmosAccountId", "Sql"),
        ("serviceBusNamespaceId", "namespace"),
        ("storageAccountId", "blob"),
        ("storageAccountId", "queue"),
        ("storageAccountId", "table"),
    }
    endpoints = _resources("network.bicep", "Microsoft.Network/privateEndpoints")
    zone_groups = _resources(
        "network.bicep", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
    )
    links = _resources("network.bicep", "Microsoft.Network/privateDnsZones/virtualNetworkLinks")
    for loop_decl in (*endpoints, *zone_groups, *links):
        assert loop_decl.loop is not None
        assert loop_decl.loop.iterable == "endpoints"


def test_network_endpoint_check_misses_a_removed_group() -> None:
    source = (MODULES / "network.bicep").read_text()
    assert ("storageAccountId", "table") not in private_endpoint_groups(
        source.replace("groupId: 'table'", "groupId: ''")
    )


def test_network_app_subnet_delegated_to_flex_consumption() -> None:
    source = (MODULES / "network.bicep").read_text()
    assert "serviceName: 'Microsoft.App/environments'" in source
    app = _decls("main.bicep")["functionApp"]
    params = properties(properties(app.body)["params"])
    assert text(params["virtualNetworkSubnetId"]) == (
        "networkIsolation ? network.outputs.appSubnetId : ''"
    )
    site = _decls("functionapp.bicep")["site"]
    assert "virtualNetworkSubnetId" in _props(site, "properties")


@pytest.mark.parametrize(
    ("module", "symbol"),
    [
        ("cosmos.bicep", "account"),
        ("servicebus.bicep", "namespace"),
        ("storage.bicep", "storage"),
    ],
)
def test_public_network_access_tied_to_network_isolation(module: str, symbol: str) -> None:
    resource = _decls(module)[symbol]
    assert _props(resource, "properties")["publicNetworkAccess"] == (
        "networkIsolation ? 'Disabled' : 'Enabled'"
    )
    assert re.search(
        r"^param networkIsolation bool = false$", (MODULES / module).read_text(), re.MULTILINE
    )
    main_symbol = {"cosmos.bicep": "cosmos", "servicebus.bicep": "serviceBus"}.get(
        module, "storage"
    )
    params = properties(properties(_decls("main.bicep")[main_symbol].body)["params"])
    assert text(params["networkIsolation"]) == "networkIsolation"


def test_servicebus_premium_when_isolated_standard_otherwise() -> None:
    sku = _decls("servicebus.bicep")["sku"].value
    assert sku is not None
    branches = [c for c in sku.children if c.type == "object"]
    assert text(sku.children[0]) == "networkIsolation"
    assert [properties(b)["name"].text for b in branches] == [b"'Premium'", b"'Standard'"]
    assert text(properties(_decls("servicebus.bicep")["namespace"].body)["sku"]) == "sku"


def test_storage_network_rule_denies_by_default_when_isolated() -> None:
    acls = _props(_decls("storage.bicep")["storage"], "properties", "networkAcls")
    assert acls["defaultAction"] == "networkIsolation ? 'Deny' : 'Allow'"


# --- Dev stack ---------------------------------------------------------------------------------


def published_ports(compose: str) -> list[str]:
    """Every entry of every `ports:` list in a compose file (short syntax)."""
    found: list[str] = []
    indent: int | None = None
    for line in compose.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        depth = len(line) - len(line.lstrip())
        if stripped == "ports:":
            indent = depth
            continue
        if indent is not None and depth > indent and stripped.startswith("- "):
            found.append(stripped[2:].strip().strip("\"'"))
            continue
        indent = None
    return found


def test_docker_compose_publishes_every_port_on_loopback_only() -> None:
    ports = published_ports((REPO / "docker-compose.yml").read_text())
    assert len(ports) == 7
    assert [p for p in ports if not p.startswith("127.0.0.1:")] == []


def test_compose_port_check_finds_a_port_on_all_interfaces() -> None:
    bad = (
        'services:\n  x:\n    ports:\n      - "127.0.0.1:1:1"\n      - "8081:8081"\n    image: y\n'
    )
    assert published_ports(bad) == ["127.0.0.1:1:1", "8081:8081"]
