"""The Azure Monitor path, end to end on loopback: ``configure_telemetry`` with an Application
Insights connection string whose ingestion endpoint is a local HTTP server, a batch relayed in
a process of its own (the API's global providers are set once per process), and what reaches
the ingestion endpoint read back: the batch span as a request, the send span as a dependency,
both linked to the writer's trace, the counters as metrics, and no Azure SDK tracing.

The Entra ID sign-in is not exercised here (no identity on a bare machine): the connection
string has no authentication string, so no credential is used.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import factories

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

_RELAY = """
import os
from azure.core.settings import settings
from events.hosts.telemetry import configure_telemetry
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from tests import factories

print(configure_telemetry(os.environ), settings.tracing_implementation(), flush=True)
publisher = InMemoryPublisher(["integration-events", "payments"])
relay = factories.orders_relay(publisher, InMemoryQuarantine())
relay.process([factories.placed("o-1", "e-1"), factories.placed("o-2", "e-2", totalCents="x")])
"""


class _Ingestion(BaseHTTPRequestHandler):
    """Accepts every telemetry item, as the ingestion service answers."""

    received: list[tuple[str, Any]]

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        self.received.append((self.path, json.loads(data)))
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def ingestion() -> Iterator[tuple[int, list[tuple[str, Any]]]]:
    received: list[tuple[str, Any]] = []
    handler = type("Handler", (_Ingestion,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def _items(received: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [
        item
        for path, body in received
        if path.endswith("/v2.1/track")
        for item in (body if isinstance(body, list) else [body])
    ]


def test_azure_monitor_receives_the_batch_as_a_request_and_the_send_as_a_linked_dependency(
    ingestion: tuple[int, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    port, received = ingestion
    endpoint = f"http://127.0.0.1:{port}/"
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),  # the exporter's offline storage
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (
            "InstrumentationKey=00000000-0000-0000-0000-000000000001;"
            f"IngestionEndpoint={endpoint};LiveEndpoint={endpoint}"
        ),
        # Nothing leaves the machine: no configuration fetch, no SDK statistics.
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    }

    result = subprocess.run(
        [sys.executable, "-c", _RELAY],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )

    assert result.stdout.split() == ["azure-monitor", "None"]  # Azure SDK tracing stays off
    items = _items(received)
    by_type = {item["data"]["baseType"]: item["data"]["baseData"] for item in items}
    request, dependency = by_type["RequestData"], by_type["RemoteDependencyData"]
    trace_id = factories.TRACEPARENT.split("-")[1]
    assert request["name"] == "relay relay_orders"
    assert request["properties"]["events.batch.quarantined"] == "1"
    assert trace_id in request["properties"]["_MS.links"]
    assert dependency["name"] == "send integration-events"
    assert trace_id in dependency["properties"]["_MS.links"]
    metrics = {
        metric["name"]: metric["value"]
        for item in items
        if item["data"]["baseType"] == "MetricData"
        for metric in item["data"]["baseData"]["metrics"]
    }
    assert metrics["events.relay.published"] == 1
    assert metrics["events.relay.quarantined"] == 1
    # No document body reaches Application Insights.
    assert "cust-9" not in json.dumps(items)
