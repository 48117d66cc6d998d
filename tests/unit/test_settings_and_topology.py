"""Settings read once with clear errors, and the topology file's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events.deployment.settings import Settings, load_settings, setting_defaults
from events.deployment.topology import DEFAULT_TOPOLOGY, iso_duration_seconds, load_topology
from events.errors import SettingsError

TOPOLOGY = load_topology()


def _load(environ: dict[str, str]) -> Settings:
    return load_settings(environ, TOPOLOGY)


LOCAL = {
    "RELAY_COSMOS": "AccountEndpoint=https://127.0.0.1:8081/;AccountKey=a2V5;",
    "RELAY_SERVICEBUS": "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=v;",
}
AZURE = {
    "RELAY_COSMOS__accountEndpoint": "https://acct.documents.azure.com:443/",
    "RELAY_COSMOS__credential": "managedidentity",
    "RELAY_COSMOS__clientId": "11111111-2222-3333-4444-555555555555",
    "RELAY_SERVICEBUS__fullyQualifiedNamespace": "ns.servicebus.windows.net",
    "RELAY_SERVICEBUS__credential": "managedidentity",
    "RELAY_SERVICEBUS__clientId": "11111111-2222-3333-4444-555555555555",
}


def test_settings_local_connection_strings_and_defaults() -> None:
    settings = _load(LOCAL)

    assert settings.cosmos.connection_string == LOCAL["RELAY_COSMOS"]
    assert settings.service_bus.connection_string == LOCAL["RELAY_SERVICEBUS"]
    assert settings.database == "relay"
    assert settings.role("leases") == "leases"
    assert settings.container("orders") == "orders"
    assert settings.default_destination == "integration-events"
    assert dict(settings.routes) == {"PaymentCaptured": "payments"}


def test_settings_azure_identity_names_endpoint_credential_and_client_id() -> None:
    settings = _load(AZURE)

    assert settings.cosmos.account_endpoint == AZURE["RELAY_COSMOS__accountEndpoint"]
    assert settings.cosmos.credential == "managedidentity"
    assert settings.cosmos.client_id == AZURE["RELAY_COSMOS__clientId"]
    assert settings.service_bus.fully_qualified_namespace == "ns.servicebus.windows.net"
    assert settings.service_bus.connection_string is None


def test_settings_missing_connections_name_both_settings_in_one_error() -> None:
    with pytest.raises(SettingsError) as raised:
        _load({})

    message = str(raised.value)
    assert "RELAY_COSMOS__accountEndpoint" in message
    assert "RELAY_SERVICEBUS__fullyQualifiedNamespace" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RELAY_COSMOS__credential", "password", "RELAY_COSMOS__credential"),
        ("RELAY_LEASES_CONTAINER", "bad?name", "RELAY_LEASES_CONTAINER"),
        ("RELAY_COSMOS", "AccountEndpoint=https://h:8081/;AccountKey=not*base64;", "AccountKey"),
        ("RELAY_COSMOS", "AccountEndpoint=https://h:8081/;", "RELAY_COSMOS has no AccountKey"),
        ("RELAY_COSMOS", "AccountEndpoint=http://h:8081/;AccountKey=a2V5;", "https://"),
        ("RELAY_SERVICEBUS", "Endpoint=sb://h;SharedAccessKeyName=k;", "SharedAccessKey"),
        ("RELAY_COSMOS_TIMEOUT", "nan", "RELAY_COSMOS_TIMEOUT"),
        ("RELAY_COSMOS_TIMEOUT", "0", "RELAY_COSMOS_TIMEOUT"),
        ("RELAY_SERVICEBUS_TIMEOUT", "inf", "RELAY_SERVICEBUS_TIMEOUT"),
        ("RELAY_SERVICEBUS_TIMEOUT", "soon", "RELAY_SERVICEBUS_TIMEOUT"),
    ],
)
def test_settings_bad_value_is_refused_naming_the_setting(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError, match=expected):
        _load({**LOCAL, name: value})


def test_settings_timeouts_default_and_override_read_as_seconds() -> None:
    default = _load(LOCAL)
    tuned = _load({**LOCAL, "RELAY_COSMOS_TIMEOUT": "5", "RELAY_SERVICEBUS_TIMEOUT": "2.5"})

    assert (default.cosmos_timeout, default.servicebus_timeout) == (30.0, 30.0)
    assert (tuned.cosmos_timeout, tuned.servicebus_timeout) == (5.0, 2.5)


def test_settings_destinations_default_and_routes_each_once() -> None:
    topology = TOPOLOGY.model_copy(
        update={
            "service_bus": TOPOLOGY.service_bus.model_copy(
                update={"routes": {"A": "payments", "B": "integration-events"}}
            )
        }
    )

    settings = load_settings(LOCAL, topology)

    assert settings.destinations == ["integration-events", "payments"]


def test_settings_every_container_the_declaration_names_is_read_from_its_setting() -> None:
    settings = _load({**LOCAL, "RELAY_ORDERS_CONTAINER": "orders-v2"})

    assert settings.container("orders") == "orders-v2"
    assert settings.container("eventstore") == "eventstore"
    assert settings.container_settings["orders"] == "RELAY_ORDERS_CONTAINER"


def test_settings_namespace_given_as_url_is_refused() -> None:
    environ = {
        **AZURE,
        "RELAY_SERVICEBUS__fullyQualifiedNamespace": "sb://ns.servicebus.windows.net/",
    }

    with pytest.raises(SettingsError, match="host name"):
        _load(environ)


def test_settings_defaults_are_what_the_topology_declares() -> None:
    defaults = setting_defaults(TOPOLOGY)
    settings = _load(LOCAL)

    for container in TOPOLOGY.cosmos.containers:
        assert defaults[container.setting] == container.name
    assert defaults["RELAY_DATABASE"] == TOPOLOGY.cosmos.database
    assert settings.default_destination == TOPOLOGY.service_bus.default_destination
    assert dict(settings.routes) == TOPOLOGY.service_bus.routes


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT30M", 1800), ("P14D", 1209600), ("PT1H30S", 3630), ("PT20S", 20)]
)
def test_topology_iso_duration_in_seconds(text: str, seconds: int) -> None:
    assert iso_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["30M", "P", "PT", "P1Y", "PT5.5S", ""])
def test_topology_bad_iso_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        iso_duration_seconds(text)


def _broken_copy(tmp_path: Path, change: str, value: object) -> Path:
    raw = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    if change == "route":
        raw["serviceBus"]["routes"]["X"] = value
    elif change == "window":
        raw["serviceBus"]["topics"][0]["duplicateDetectionHistoryTimeWindow"] = value
    elif change == "leases":
        [leases] = [c for c in raw["cosmos"]["containers"] if c["role"] == "leases"]
        leases["partitionKey"] = value
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "value", "expected"),
    [
        ("route", "no-such-topic", "no-such-topic"),
        ("window", "half an hour", "ISO 8601"),
        ("leases", "/partitionKey", "must be /id"),
    ],
)
def test_topology_invalid_file_names_the_problem(
    tmp_path: Path, change: str, value: object, expected: str
) -> None:
    with pytest.raises(SettingsError, match=expected):
        load_topology(_broken_copy(tmp_path, change, value))
