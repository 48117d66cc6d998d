"""``lag`` and ``replay`` as an operator runs them, against the local servers over loopback.

Messages are counted with the raw azure-servicebus SDK on the ``orders-placed`` subscription
(no sessions; it takes ``OrderPlaced`` only), documents written with the raw azure-cosmos SDK.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import CosmosClient, DatabaseProxy
from azure.servicebus import ServiceBusClient

from devstack.cosmos import LocalCosmos
from devstack.servicebus import LocalServiceBus
from events.deployment import settings as names
from events.deployment.catalog import load_deployment
from events.deployment.settings import load_settings
from events.hosts.lag import monitor_for, totals
from tests import factories
from tests.commands import run_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
#: Bound for one command, and for waiting on a running relay.
BOUND = 90.0
#: A `_ts` boundary: the change feed's time resolution is one second.
TICK = 1.2


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
        "TMPDIR": str(tmp_path),
        names.COSMOS_CONNECTION: local_cosmos.connection_string,
        names.SERVICEBUS_CONNECTION: local_servicebus.connection_string,
        names.DATABASE: database_name,
        names.COSMOS_TIMEOUT: "5",
        names.SERVICEBUS_TIMEOUT: "5",
    }


@pytest.fixture
def database(env: dict[str, str], cosmos_client: CosmosClient, database_name: str) -> DatabaseProxy:
    provisioned = run_events(env, "provision", "--insecure-local", timeout=BOUND)
    assert provisioned.returncode == 0, provisioned.stderr
    return cosmos_client.get_database_client(database_name)


def _events(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_events(env, *args, "--insecure-local", timeout=BOUND)


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
                "--lag-interval",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
            text=True,
        )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_for(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"not within {BOUND:g} s: {what}")


def _summary(output: str, feed: str) -> tuple[int, int]:
    """(pending, seconds behind) from the lag table's summary line of ``feed``."""
    match = re.search(rf"^{feed}: pending=(\d+) behind=(\d+)s$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def _leases(database: DatabaseProxy, prefix: str) -> list[dict[str, Any]]:
    return [
        lease
        for lease in database.get_container_client("leases").read_all_items()
        if str(lease["id"]).startswith(prefix)
    ]


def _placed_ids(client: ServiceBusClient) -> list[str]:
    """Message ids on the orders-placed subscription, received and completed until idle."""
    ids: list[str] = []
    with client.get_subscription_receiver(
        "integration-events", "orders-placed", max_wait_time=3
    ) as receiver:
        while True:
            batch = receiver.receive_messages(max_message_count=50, max_wait_time=3)
            if not batch:
                return ids
            for message in batch:
                ids.append(str(message.message_id))
                receiver.complete_message(message)


def test_lag_rises_while_the_relay_is_stopped_and_returns_to_zero(
    env: dict[str, str], database: DatabaseProxy, tmp_path: Path
) -> None:
    log = tmp_path / "relay.log"
    relay = _start_relay(env, log)
    try:
        _wait_for("leases of both feeds", lambda: len(_leases(database, "relay-")) >= 2)
    finally:
        _stop(relay)
    orders = database.get_container_client("orders")
    for n in range(3):
        orders.upsert_item(factories.placed(f"order-{n}", f"evt-{n}"))
    time.sleep(TICK)

    first = _events(env, "lag")
    time.sleep(TICK)
    second = _events(env, "lag", "--feed", "relay_orders")

    assert first.returncode == 0, first.stderr
    assert _summary(first.stdout, "relay_orders")[0] == 3
    assert _summary(first.stdout, "relay_eventstore") == (0, 0)
    assert _summary(first.stdout, "relay_orders")[1] >= 1
    assert "relay-orders.00-FF" in first.stdout
    # The oldest pending change keeps waiting: the time behind grows while nothing relays.
    assert _summary(second.stdout, "relay_orders")[1] > _summary(first.stdout, "relay_orders")[1]
    assert "relay_eventstore" not in second.stdout

    deployment = load_deployment()
    monitor = monitor_for(load_settings(env, deployment.topology), deployment, verify_tls=False)
    relay = _start_relay(env, log)
    try:
        _wait_for(
            "the relay caught up",
            lambda: totals(monitor.measure()).get("relay_orders") == (0, 0.0),
        )
    finally:
        _stop(relay)
    caught_up = _events(env, "lag")
    assert _summary(caught_up.stdout, "relay_orders") == (0, 0)


def test_lag_watch_redraws_count_times_then_stops(
    env: dict[str, str], database: DatabaseProxy
) -> None:
    result = _events(env, "lag", "--watch", "0.2", "--count", "2")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("FEED  ") == 2
    assert result.stdout.count("(no leases yet)") == 4  # two feeds, two refreshes


def test_lag_reads_a_functions_host_lease_from_its_continuation(
    env: dict[str, str], database: DatabaseProxy
) -> None:
    orders = database.get_container_client("orders")
    lsns = [
        orders.upsert_item(factories.placed(f"order-{n}", f"evt-{n}"))["_lsn"] for n in range(4)
    ]
    # A lease as the Cosmos DB extension writes it (EPK format): checkpoint after the first.
    database.get_container_client("leases").upsert_item(
        {
            "id": "relay-orders.account.documents.azure.com_db_coll..0",
            "version": 1,
            "LeaseToken": "",
            "FeedRange": {"Range": {"min": "", "max": "FF"}},
            "Owner": "functions-worker-1",
            "ContinuationToken": f'"{lsns[0]}"',
            "timestamp": datetime.now(UTC).isoformat(),
            "properties": {},
        }
    )
    database.get_container_client("leases").upsert_item(
        {"id": "relay-orders.account.documents.azure.com_db_coll.info", "id2": "store marker"}
    )

    result = _events(env, "lag", "--feed", "relay_orders")

    assert result.returncode == 0, result.stderr
    assert _summary(result.stdout, "relay_orders")[0] == 3
    assert "functions-worker-1" in result.stdout
    assert "Functions host lease" in result.stdout


def test_replay_window_resends_exactly_its_changes_and_dry_run_sends_nothing(
    env: dict[str, str], database: DatabaseProxy, servicebus_client: ServiceBusClient
) -> None:
    orders = database.get_container_client("orders")
    orders.upsert_item(factories.placed("order-before", "evt-before"))
    time.sleep(TICK)
    since = datetime.now(UTC)
    time.sleep(TICK)
    inside = [("order-in-1", "evt-in-1"), ("order-in-2", "evt-in-2")]
    for order_id, event_id in inside:
        orders.upsert_item(factories.placed(order_id, event_id))
    time.sleep(TICK)
    until = datetime.now(UTC)
    time.sleep(TICK)
    orders.upsert_item(factories.placed("order-after", "evt-after"))
    window = ["--feed", "relay_orders", "--since", since.isoformat(), "--until", until.isoformat()]

    dry = _events(env, "replay", *window, "--dry-run")
    dry_received = _placed_ids(servicebus_client)
    real = _events(env, "replay", *window)
    received = _placed_ids(servicebus_client)

    assert dry.returncode == 0, dry.stderr
    assert "would send: documents=2 events=2 (integration-events=2)" in dry.stdout
    assert dry_received == []
    assert real.returncode == 0, real.stderr
    assert "sent: documents=2 events=2" in real.stdout
    assert "replay progress 2/2 documents 100%" in real.stderr
    assert sorted(received) == sorted(factories.outbox_id(o, e) for o, e in inside)
    # The replay's leases are gone, and it never created or touched the live feed's leases.
    assert _leases(database, "replay-") == []
    assert _leases(database, "relay-orders.") == []


def test_replay_older_than_dedup_window_and_outbox_ttl_refused_without_force(
    env: dict[str, str], database: DatabaseProxy, servicebus_client: ServiceBusClient
) -> None:
    database.get_container_client("orders").upsert_item(factories.placed("order-1", "evt-1"))
    since = (datetime.now(UTC) - timedelta(days=11)).isoformat()

    refused = _events(env, "replay", "--feed", "relay_orders", "--since", since)
    nothing = _placed_ids(servicebus_client)
    forced = _events(env, "replay", "--feed", "relay_orders", "--since", since, "--force")
    received = _placed_ids(servicebus_client)

    assert refused.returncode == 1
    assert "outbox TTL (864000 s" in refused.stderr
    assert "duplicate-detection window of integration-events (1800 s)" in refused.stderr
    assert "rely on their inbox" in refused.stderr
    assert "--force" in refused.stderr.splitlines()[-1]
    assert nothing == []
    assert forced.returncode == 0, forced.stderr
    assert received == [factories.outbox_id("order-1", "evt-1")]


def test_replay_dedup_window_only_warns_for_the_event_store_feed_without_outbox(
    env: dict[str, str], database: DatabaseProxy
) -> None:
    since = (datetime.now(UTC) - timedelta(days=11)).isoformat()

    result = _events(env, "replay", "--feed", "relay_eventstore", "--since", since, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "outbox TTL" not in result.stderr
    assert "duplicate-detection window" in result.stderr
    assert "would send: documents=0 events=0" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--feed", "relay_orders", "--since", "yesterday"],
        ["--feed", "relay_orders"],
        ["--feed", "nope", "--since", "2026-01-01T00:00:00Z"],
        ["--feed", "relay_orders", "--since", "2026-01-02", "--until", "2026-01-01"],
        ["--feed", "relay_orders", "--resume", "replay-x.relay-orders.", "--dry-run"],
    ],
)
def test_replay_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    result = run_events(dict(os.environ), "replay", *args, timeout=BOUND)

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m events replay: ")


@pytest.mark.parametrize(
    "args", [["--watch", "0"], ["--count", "2"], ["--feed", "nope"], ["--limit", "x"]]
)
def test_lag_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    result = run_events(dict(os.environ), "lag", *args, timeout=BOUND)

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("python -m events lag: ")


@pytest.mark.parametrize(
    "args",
    [["lag"], ["replay", "--feed", "relay_orders", "--since", "2026-12-01T00:00:00Z", "--dry-run"]],
)
def test_lag_and_replay_database_not_provisioned_exit_2_naming_the_setting(
    env: dict[str, str], args: list[str]
) -> None:
    result = _events(env, *args)

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert names.DATABASE in lines[0]
