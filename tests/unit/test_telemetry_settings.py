"""Which exporter the settings choose, and the console exporter in a process of its own (the
API's global providers can be set once per process, so never in the test process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.deployment.settings import TELEMETRY
from events.errors import SettingsError
from events.hosts.telemetry import _client_id, choose_exporter

ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://x/"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "none"),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION}, "azure-monitor"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "otlp"),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION,
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            },
            "azure-monitor",
        ),
        ({TELEMETRY: "console", "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION}, "console"),
        ({TELEMETRY: " None "}, "none"),
        ({TELEMETRY: "OTLP"}, "otlp"),
        ({TELEMETRY: "auto", "APPLICATIONINSIGHTS_CONNECTION_STRING": " "}, "none"),
    ],
)
def test_telemetry_settings_choose_the_exporter(environ: dict[str, str], expected: str) -> None:
    assert choose_exporter(environ) == expected


def test_telemetry_azure_monitor_without_connection_string_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="APPLICATIONINSIGHTS_CONNECTION_STRING") as caught:
        choose_exporter({TELEMETRY: "azure-monitor"})

    assert caught.value.setting == "APPLICATIONINSIGHTS_CONNECTION_STRING"


_KNOWN = {"", "auto", "otlp", "console", "none"}  # empty: auto


@given(value=st.text(max_size=30))
def test_telemetry_any_setting_value_is_a_choice_or_a_settings_error(value: str) -> None:
    if value.strip().lower() in _KNOWN:
        assert choose_exporter({TELEMETRY: value}) in {"otlp", "console", "none"}
    else:
        with pytest.raises(SettingsError, match=TELEMETRY):
            choose_exporter({TELEMETRY: value})


@pytest.mark.parametrize(
    ("authentication", "expected"),
    [
        ("ClientId=1234;Authorization=AAD", (True, "1234")),
        ("Authorization=AAD", (True, None)),
        ("", (False, None)),
    ],
)
def test_telemetry_authentication_string_names_the_managed_identity(
    authentication: str, expected: tuple[bool, str | None]
) -> None:
    assert _client_id({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": authentication}) == expected


_CONSOLE_PROBE = """
import os
from events.hosts.telemetry import configure_telemetry
from events.core.consumer import IdempotentConsumer, InMemoryInbox
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from tests import factories

print(configure_telemetry(os.environ), configure_telemetry({}), flush=True)
publisher = InMemoryPublisher(["integration-events", "payments"])
factories.orders_relay(publisher, InMemoryQuarantine()).process([factories.placed("o-1", "e-1")])
"""


def test_telemetry_console_exporter_prints_the_batch_and_send_spans_and_the_counters() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CONSOLE_PROBE],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", TELEMETRY: "console"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.split() == ["console", "console"]  # configured once, then kept
    lines = result.stderr.splitlines()
    [batch] = [line for line in lines if line.startswith("span 'relay relay_orders'")]
    [send] = [line for line in lines if line.startswith("span 'send integration-events'")]
    trace_id = "0af7651916cd43dd8448eb211c80319c"  # factories.TRACEPARENT's
    assert f"links={trace_id}" in batch
    assert "kind=CONSUMER" in batch
    assert "kind=PRODUCER" in send
    assert f"links={trace_id}" in send
    assert "messaging.message.id=" in send
    # The metrics are exported at exit (the providers shut down then).
    assert "metric events.relay.published{events.feed=relay_orders} value=1 unit={event}" in lines
    [duration] = [line for line in lines if line.startswith("metric events.relay.batch.duration")]
    assert "count=1 " in duration
    assert duration.endswith("unit=s")


def test_telemetry_run_command_with_an_unknown_exporter_exits_2_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "events", "run"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", TELEMETRY: "jaeger"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 2
    assert f"python -m events run: {TELEMETRY} must be one of" in result.stderr
    assert "Traceback" not in result.stderr


def test_telemetry_function_app_configures_the_exporter_once_at_import() -> None:
    probe = (
        "import function_app; from events.hosts import telemetry; "
        "print(telemetry.configure_telemetry({}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", TELEMETRY: "console"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "console"


def test_telemetry_package_and_relay_without_exporter_load_no_opentelemetry_sdk() -> None:
    probe = (
        "import sys, os; import events; from events.hosts.telemetry import configure_telemetry; "
        "from events.core.publisher import InMemoryPublisher; "
        "from events.core.quarantine import InMemoryQuarantine; from tests import factories; "
        "configure_telemetry(os.environ); "
        "factories.orders_relay(InMemoryPublisher(['integration-events', 'payments']), "
        "InMemoryQuarantine()).process([factories.placed('o-1', 'e-1')]); "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    loaded = result.stdout.strip()
    assert "'trace'" in loaded  # the API
    assert "'sdk'" not in loaded
    assert "'exporter'" not in loaded
