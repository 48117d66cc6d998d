"""`python -m events run` and `python -m events quarantine` as a person runs them: start-up
refusals (exit 2, one line naming the thing, no traceback) and a bounded stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos import CosmosClient, DatabaseProxy, PartitionKey

from devstack.cosmos import LocalCosmos
from devstack.servicebus import LocalServiceBus
from events.deployment import settings as names
from tests import factories
from tests.commands import run_events
from tests.fixtures.blackhole import BlackHole

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
#: Bound for a command that must stop by itself; the relay's own bound is --shutdown-timeout.
BOUND = 90.0
CONTAINERS = {
    "orders": "/partitionKey",
    "eventstore": "/streamId",
    "leases": "/id",
    "quarantine": "/partitionKey",
}


@pytest.fixture
def relay_database(cosmos_client: CosmosClient) -> Iterator[DatabaseProxy]:
    database = cosmos_client.create_database(id=f"relay-{uuid.uuid4().hex[:10]}")
    for name, path in CONTAINERS.items():
        database.create_container(id=name, partition_key=PartitionKey(path=path))
    yield database
    cosmos_client.delete_database(database)


def _env(
    cosmos: LocalCosmos, database: DatabaseProxy, servicebus: str, **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        names.COSMOS_CONNECTION: cosmos.connection_string,
        names.SERVICEBUS_CONNECTION: servicebus,
        names.DATABASE: database.id,
        names.COSMOS_TIMEOUT: "5",
        names.SERVICEBUS_TIMEOUT: "2",
    }
    env.update(extra)
    return env


def _black_hole_bus(hole: BlackHole) -> str:
    return (
        f"Endpoint=sb://{hole.address};SharedAccessKeyName=k;SharedAccessKey=v;"
        "UseDevelopmentEmulator=true;"
    )


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_events(env, *args, timeout=BOUND)


def _assert_refused(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for name in named:
        assert name in lines[0]


@pytest.mark.parametrize("command", [("run", "--insecure-local"), ("quarantine", "list")])
def test_command_missing_database_exits_2_naming_setting(
    local_cosmos: LocalCosmos,
    relay_database: DatabaseProxy,
    local_servicebus: LocalServiceBus,
    command: tuple[str, ...],
) -> None:
    env = _env(local_cosmos, relay_database, local_servicebus.connection_string)
    env[names.DATABASE] = "no-such-database"

    result = _run(env, *command, *(["--insecure-local"] if command[0] == "quarantine" else []))

    _assert_refused(result, "no-such-database", names.DATABASE)


def test_run_missing_container_exits_2_naming_setting(
    local_cosmos: LocalCosmos, relay_database: DatabaseProxy, local_servicebus: LocalServiceBus
) -> None:
    env = _env(
        local_cosmos,
        relay_database,
        local_servicebus.connection_string,
        **{"RELAY_ORDERS_CONTAINER": "no-such-container"},
    )

    result = _run(env, "run", "--insecure-local")

    _assert_refused(result, "no-such-container", "RELAY_ORDERS_CONTAINER")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("AccountEndpoint=https://127.0.0.1:8081/;AccountKey=not*base64;", "AccountKey"),
        ("AccountEndpoint=https://127.0.0.1:8081/;", "AccountKey"),
    ],
)
def test_run_bad_cosmos_key_exits_2_naming_setting(
    local_cosmos: LocalCosmos,
    relay_database: DatabaseProxy,
    local_servicebus: LocalServiceBus,
    value: str,
    problem: str,
) -> None:
    env = _env(local_cosmos, relay_database, local_servicebus.connection_string)
    env[names.COSMOS_CONNECTION] = value

    result = _run(env, "run", "--insecure-local")

    _assert_refused(result, names.COSMOS_CONNECTION, problem)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--log-level", "LOUD"),
        ("--duration", "-5"),
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--lease-duration", "1e300"),
        ("--max-items", "many"),
        ("--handler-timeout", "0"),
        ("--shutdown-timeout", "nan"),
    ],
)
def test_run_bad_option_exits_2_naming_option(option: str, value: str) -> None:
    result = _run({**os.environ, "PYTHONPATH": str(ROOT)}, "run", option, value)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert option in result.stderr


def _sigterm_once(
    black_hole: BlackHole, env: dict[str, str], connections: int, *options: str
) -> tuple[int, str]:
    """Start ``python -m events run``, wait (bounded) until it made ``connections`` connections
    to the black hole, send SIGTERM and wait at most BOUND: (exit status, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "events", "run", "--insecure-local", *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(int(BOUND / 0.1)):
            if black_hole.accepted >= connections or process.poll() is not None:
                break
            time.sleep(0.1)
        assert process.poll() is None, "the relay ended before it was asked to"
        assert black_hole.accepted >= connections, "the relay never reached the black hole"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=BOUND)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return process.returncode, process.stderr.read() if process.stderr else ""


def test_run_sigterm_while_send_hangs_on_black_hole_exits_within_bound(
    local_cosmos: LocalCosmos, relay_database: DatabaseProxy, black_hole: BlackHole
) -> None:
    relay_database.get_container_client("orders").upsert_item(factories.placed("order-1", "evt-1"))
    env = _env(
        local_cosmos,
        relay_database,
        _black_hole_bus(black_hole),
        # Short: the start-up probes give up quickly, the relay runs and its sends hang.
        **{names.SERVICEBUS_TIMEOUT: "3"},
    )

    # Two start-up probes, then the relay's own send: three connections.
    status, stderr = _sigterm_once(
        black_hole, env, 3, "--shutdown-timeout", "10", "--poll-interval", "0.2"
    )

    assert status == 0, stderr
    assert "InsecureRequestWarning" not in stderr  # --insecure-local on loopback is quiet
    assert "stopping (signal SIGTERM)" in stderr
    assert "lease released" in stderr


def test_run_sigterm_with_cosmos_black_holed_exits_within_bound(
    local_servicebus: LocalServiceBus, black_hole: BlackHole
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        names.COSMOS_CONNECTION: f"AccountEndpoint=https://{black_hole.address}/;AccountKey=a2V5;",
        names.SERVICEBUS_CONNECTION: local_servicebus.connection_string,
        names.COSMOS_TIMEOUT: "300",
    }

    status, stderr = _sigterm_once(black_hole, env, 1, "--shutdown-timeout", "5")

    assert status == 1, stderr
    assert "Traceback" not in stderr
    assert "exiting now" in stderr
