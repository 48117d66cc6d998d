"""local.settings.example.json, docker-compose.yml, azure.yaml and the Bicep parameters: every
setting covered, and no secret committed other than the emulators' documented public keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from events.deployment.settings import app_settings, setting_defaults
from events.deployment.topology import load_topology
from tests.infra.bicep import INFRA, REPO, bicep_files

pytestmark = pytest.mark.infra

# Published in the emulators' documentation; identical on every machine, so not secrets.
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
SERVICEBUS_EMULATOR_KEY = "SAS_KEY_VALUE"

_SECRET_FIELD = re.compile(
    r"(AccountKey|SharedAccessKey|Password|InstrumentationKey|ClientSecret|sig)=([^;]*)", re.I
)


def _values() -> dict[str, Any]:
    settings: dict[str, Any] = json.loads((REPO / "local.settings.example.json").read_text())
    assert settings["IsEncrypted"] is False
    values: dict[str, Any] = settings["Values"]
    return values


def test_local_settings_example_covers_every_setting_the_code_reads() -> None:
    values = _values()
    # Locally `NAME` holds a connection string where Azure uses `NAME__accountEndpoint` etc.
    needed = {name.split("__")[0] for name in app_settings(load_topology())}
    assert needed - set(values) == set()
    defaults = setting_defaults(load_topology())
    assert {k: values[k] for k in defaults} == defaults


def test_local_settings_example_runs_python_on_azurite_and_emulators() -> None:
    values = _values()
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["RELAY_COSMOS"].startswith("AccountEndpoint=https://localhost:8081/;")
    assert values["RELAY_SERVICEBUS"].startswith("Endpoint=sb://localhost;")
    assert "UseDevelopmentEmulator=true;" in values["RELAY_SERVICEBUS"]
    assert all(isinstance(v, str) for v in values.values())


def test_local_settings_example_holds_only_public_emulator_keys() -> None:
    secrets = {
        (name, match.group(1), match.group(2))
        for name, value in _values().items()
        for match in _SECRET_FIELD.finditer(value)
    }
    assert secrets == {
        ("RELAY_COSMOS", "AccountKey", COSMOS_EMULATOR_KEY),
        ("RELAY_SERVICEBUS", "SharedAccessKey", SERVICEBUS_EMULATOR_KEY),
    }


def test_docker_compose_sql_password_comes_from_required_env_var() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    passwords = re.findall(r"MSSQL_SA_PASSWORD:\s*(\S.*)", compose)
    assert passwords
    assert all(p.startswith("${MSSQL_SA_PASSWORD:?") for p in passwords)
    assert "infra/emulator/Config.json:/ServiceBus_Emulator/ConfigFiles/Config.json" in compose
    for image in (
        "mcr.microsoft.com/cosmosdb/linux/azure-cosmos-emulator:latest",
        "mcr.microsoft.com/azure-messaging/servicebus-emulator:latest",
        "mcr.microsoft.com/azure-sql-edge:latest",
        "mcr.microsoft.com/azure-storage/azurite",
    ):
        assert image in compose


def test_bicep_parameters_hold_no_secret() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= {
        "environmentName",
        "location",
        "principalId",
        "principalType",
        "eventSource",
        "alertEmail",
        "networkIsolation",
    }
    assert not any(_SECRET_FIELD.search(json.dumps(p)) for p in parameters.values())


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_outputs_and_reads_no_secret(path: Path) -> None:
    code = path.read_text()
    assert re.search(r"\blist(Keys|ConnectionStrings|AccountSas|ServiceSas)\(", code) is None
    assert "@secure()" not in code
    outputs = re.findall(r"^output\s+(\w+)", code, re.MULTILINE)
    assert [o for o in outputs if re.search(r"key|secret|password|connection", o, re.I)] == []


def test_azure_yaml_declares_bicep_infra_and_python_function_service() -> None:
    # No YAML parser in the venv: the file is small and flat enough to check line by line.
    lines = [line.rstrip() for line in (REPO / "azure.yaml").read_text().splitlines()]
    for expected in (
        "infra:",
        "  provider: bicep",
        "  path: infra",
        "services:",
        "  relay:",
        "    project: .",
        "    language: python",
        "    host: function",
    ):
        assert expected in lines


def test_bicep_function_app_tagged_with_azd_service_name() -> None:
    code = (INFRA / "modules" / "functionapp.bicep").read_text()
    assert "'azd-service-name': serviceName" in code
    assert "param serviceName string = 'relay'" in code
