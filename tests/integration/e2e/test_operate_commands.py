"""The operator's commands as a person runs them, against the local servers over loopback:
``provision``, ``check`` and a restart of ``run`` after SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import CosmosClient, DatabaseProxy, PartitionKey

from devstack.cosmos import LocalCosmos
from devstack.servicebus import LocalServiceBus
from events.deployment import settings as names
from events.hosts.runtime import Runtime
from tests import factories
from tests.commands import run_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
#: Bound for one command, and for waiting on a running relay.
BOUND = 90.0
#: Far longer than BOUND: a restart that waited for expiry could not pass in time.
LEASE_DURATION = 600


@pytest.fixture
def database_name(cosmos_client: CosmosClient) -> Iterator[str]:
    name = f"ops-{uuid.uuid4().hex[:10]}"
    yield name
    with contextlib.suppress(Exception):
        cosmos_client.delete_database(name)


@pytest.fixture
def env(
    local_cosmos: LocalCosmos, local_servicebus: LocalServiceBus, database_name: str, tmp_path: Path
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # The instance-id lock files of this test only: other relays on this machine may run.
        "TMPDIR": str(tmp_path),
        names.COSMOS_CONNECTION: local_cosmos.connection_string,
        names.SERVICEBUS_CONNECTION: local_servicebus.connection_string,
        names.DATABASE: database_name,
        names.COSMOS_TIMEOUT: "5",
        names.SERVICEBUS_TIMEOUT: "5",
    }


def _events(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_events(env, *args, timeout=BOUND)


def _database(cosmos_client: CosmosClient, name: str) -> DatabaseProxy:
    return cosmos_client.get_database_client(name)


def test_provision_twice_creates_then_changes_nothing(
    env: dict[str, str], cosmos_client: CosmosClient, database_name: str
) -> None:
    first = _events(env, "provision", "--insecure-local")
    second = _events(env, "provision", "--insecure-local")

    assert first.returncode == 0, first.stderr
    assert f"database {database_name}: created" in first.stdout
    assert "container leases: created (/id" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert "nothing to change" in second.stdout
    assert "local broker" in second.stdout
    containers = _database(cosmos_client, database_name).list_containers()
    keys = {c["id"]: c["partitionKey"]["paths"] for c in containers}
    assert keys["leases"] == ["/id"]
    assert keys["orders"] == ["/partitionKey"]


def test_provision_container_with_other_partition_key_exits_2_one_line(
    env: dict[str, str], cosmos_client: CosmosClient, database_name: str
) -> None:
    database = cosmos_client.create_database(id=database_name)
    database.create_container(id="leases", partition_key=PartitionKey(path="/partitionKey"))

    result = _events(env, "provision", "--insecure-local")

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "leases" in lines[0]
    assert "/partitionKey" in lines[0]
    assert "/id" in lines[0]


def test_check_online_provisioned_stack_passes_every_rule(env: dict[str, str]) -> None:
    assert _events(env, "provision", "--insecure-local").returncode == 0

    result = _events(env, "check", "--insecure-local")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "PASS cosmos-containers" in result.stdout
    assert "PASS service-bus-entities" in result.stdout


def test_check_online_missing_container_fails_naming_it(
    env: dict[str, str], cosmos_client: CosmosClient, database_name: str
) -> None:
    assert _events(env, "provision", "--insecure-local").returncode == 0
    _database(cosmos_client, database_name).delete_container("quarantine")

    result = _events(env, "check", "--insecure-local")

    assert result.returncode == 1
    [line] = [x for x in result.stdout.splitlines() if x.startswith("FAIL")]
    assert "cosmos-containers" in line
    assert "quarantine" in line


def _orders_leases(database: DatabaseProxy) -> list[dict[str, Any]]:
    return [
        lease
        for lease in database.get_container_client("leases").read_all_items()
        if str(lease["id"]).startswith("relay-orders.")
    ]


def _wait_for(what: str, condition: Any, process: subprocess.Popen[str]) -> Any:
    """Poll ``condition`` (bounded by BOUND) until it returns something truthy."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process.poll() is None, f"the relay ended while waiting for {what}"
        time.sleep(0.2)
    pytest.fail(f"not within {BOUND:g} s: {what}")


def _start_relay(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("a", encoding="utf-8") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "events",
                "run",
                "--insecure-local",
                "--poll-interval",
                "0.2",
                "--acquire-interval",
                "1",
                "--lease-duration",
                str(LEASE_DURATION),
                "--renew-interval",
                "300",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
            text=True,
        )


def _stop(process: subprocess.Popen[str], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_run_sigkilled_restarted_without_instance_id_resumes_before_lease_expiry(
    env: dict[str, str], cosmos_client: CosmosClient, database_name: str, tmp_path: Path
) -> None:
    assert _events(env, "provision", "--insecure-local").returncode == 0
    database = _database(cosmos_client, database_name)
    orders = database.get_container_client("orders")
    orders.upsert_item(factories.placed("order-1", "evt-1"))
    log = tmp_path / "relay.log"

    first = _start_relay(env, log)
    try:
        [owned] = _wait_for(
            "the first document checkpointed",
            lambda: [x for x in _orders_leases(database) if x["owner"] and x["continuation"]],
            first,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=BOUND)
    finally:
        _stop(first, signal.SIGKILL)
    orders.upsert_item(factories.placed("order-2", "evt-2"))

    second = _start_relay(env, log)
    try:
        [resumed] = _wait_for(
            "the new document checkpointed by the restarted relay",
            lambda: [
                x
                for x in _orders_leases(database)
                if x["id"] == owned["id"] and x["continuation"] != owned["continuation"]
            ],
            second,
        )
    finally:
        _stop(second, signal.SIGTERM)

    # Same owner, and the lease was written again before the old claim would have expired:
    # it was reclaimed, not taken over after expiry.
    assert resumed["owner"] == owned["owner"]
    assert resumed["timestamp"] < owned["expiresAt"]
    assert "lease acquired" in log.read_text(encoding="utf-8")


def test_quarantine_redrive_aggregate_stops_at_first_still_quarantined(
    env: dict[str, str], cosmos_client: CosmosClient, database_name: str
) -> None:
    assert _events(env, "provision", "--insecure-local").returncode == 0
    runtime = Runtime.from_environment(env, verify_tls=False)
    runtime.relay("relay_orders").process(
        [
            factories.order("o-7", status="teleported"),
            factories.shipped("o-7", "e-2"),
            factories.shipped("o-7", "e-3"),
            factories.order("o-8", status="teleported"),
        ]
    )

    result = _events(env, "quarantine", "redrive", "--aggregate", "o-7", "--insecure-local")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "still quarantined" in lines[0]
    assert all("not tried: parked behind" in line for line in lines[1:3])
    assert lines[-2] == "aggregate=o-7 feed=relay_orders still parked"
    assert lines[-1].startswith("re-driven=0 still-quarantined=3 ")
    quarantine = _database(cosmos_client, database_name).get_container_client("quarantine")
    records = [i for i in quarantine.read_all_items() if "kind" not in i]
    parks = [i["partitionKey"] for i in quarantine.read_all_items() if "kind" in i]
    assert len(records) == 4  # nothing deleted, o-8 untouched
    assert sorted(parks) == ["o-7", "o-8"]
