"""Consumer crashes, redeliveries, changed bodies and races on the local stack, real SDKs.

A consumer process (consumer_script.py: azure-servicebus receiver on the local broker, the
transactional inbox on the local Cosmos DB server) is SIGKILLed between its commit and the
message's completion; the broker redelivers the message to the next consumer, and the effect
must exist exactly once. The effect documents have random ids: a second commit would show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, DatabaseProxy, PartitionKey
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

from devstack.cosmos import LocalCosmos
from devstack.servicebus import LocalServiceBus
from events.adapters.servicebus import to_sdk_message
from events.core.envelope import IntegrationEvent
from events.core.messages import Router, to_message

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

SCRIPT = Path(__file__).with_name("consumer_script.py")
REPO = Path(__file__).resolve().parents[3]
TOPIC = "integration-events"
#: The topology's subscription without sessions, for OrderPlaced only.
SUBSCRIPTION = "orders-placed"
PROCESS_SECONDS = 60
TIME = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _event(event_id: str, amount: int) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/integration-relay/orders",
        type="OrderPlaced",
        subject="order-1",
        time=TIME,
        data={"orderId": "order-1", "amount": amount},
        partitionkey="order-1",
    )


def _send(bus: LocalServiceBus, event: IntegrationEvent, message_id: str | None = None) -> None:
    """Send the event; another ``message_id`` passes the topic's duplicate detection, as a
    re-publication after its window would."""
    message = to_sdk_message(to_message(event, Router(TOPIC)))
    if message_id is not None:
        message.message_id = message_id
    with (
        ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as client,
        client.get_topic_sender(TOPIC) as sender,
    ):
        sender.send_messages(message)


@pytest.fixture
def ledger(cosmos_database: DatabaseProxy) -> ContainerProxy:
    return cosmos_database.create_container(
        id="ledger", partition_key=PartitionKey(path="/partitionKey"), default_ttl=-1
    )


def _command(bus: LocalServiceBus, cosmos: LocalCosmos, ledger: ContainerProxy) -> list[str]:
    database = ledger.container_link.split("/")[1]
    return [
        sys.executable,
        str(SCRIPT),
        bus.connection_string,
        TOPIC,
        SUBSCRIPTION,
        cosmos.endpoint,
        cosmos.key,
        database,
        ledger.id,
        "ledger",
    ]


def _run(
    bus: LocalServiceBus,
    cosmos: LocalCosmos,
    ledger: ContainerProxy,
    env: Mapping[str, str] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        _command(bus, cosmos, ledger),
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=REPO,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line]


def _effects(ledger: ContainerProxy, event_id: str) -> list[dict[str, Any]]:
    return list(
        ledger.query_items(
            "SELECT * FROM c WHERE c.kind = 'effect' AND c.eventId = @id",
            parameters=[{"name": "@id", "value": event_id}],
            enable_cross_partition_query=True,
        )
    )


def test_consumer_killed_after_commit_before_completion_effect_exists_once(
    local_servicebus: LocalServiceBus, local_cosmos: LocalCosmos, ledger: ContainerProxy
) -> None:
    _send(local_servicebus, _event("evt-crash", 5))

    code, lines = _run(
        local_servicebus, local_cosmos, ledger, env={"CONSUMER_CRASH_AFTER_COMMIT": "1"}
    )

    assert code == -signal.SIGKILL
    assert lines == []  # killed before it could settle the message
    assert len(_effects(ledger, "evt-crash")) == 1
    code, lines = _run(local_servicebus, local_cosmos, ledger)
    assert code == 0
    assert [(line["event"], line["settlement"], line["duplicate"]) for line in lines] == [
        ("evt-crash", "complete", True)
    ]
    assert len(_effects(ledger, "evt-crash")) == 1
    assert local_servicebus.stats.dead_lettered == {}


def test_idempotent_consumer_killed_after_done_mark_redelivery_is_a_duplicate(
    local_servicebus: LocalServiceBus,
    local_cosmos: LocalCosmos,
    ledger: ContainerProxy,
    cosmos_database: DatabaseProxy,
) -> None:
    cosmos_database.create_container(
        id="inbox", partition_key=PartitionKey(path="/consumer"), default_ttl=1_209_600
    )
    _send(local_servicebus, _event("evt-idem", 3))
    idempotent = {"CONSUMER_MODE": "idempotent"}

    code, lines = _run(
        local_servicebus,
        local_cosmos,
        ledger,
        env={**idempotent, "CONSUMER_CRASH_AFTER_COMMIT": "1"},
    )

    assert code == -signal.SIGKILL
    assert len(_effects(ledger, "evt-idem")) == 1
    code, lines = _run(local_servicebus, local_cosmos, ledger, env=idempotent)
    assert [(line["settlement"], line["duplicate"]) for line in lines] == [("complete", True)]
    assert len(_effects(ledger, "evt-idem")) == 1


def test_consumer_redelivered_id_with_changed_body_is_dead_lettered(
    local_servicebus: LocalServiceBus, local_cosmos: LocalCosmos, ledger: ContainerProxy
) -> None:
    _send(local_servicebus, _event("evt-1", 5))
    code, first = _run(local_servicebus, local_cosmos, ledger)
    _send(local_servicebus, _event("evt-1", 500), message_id="evt-1-tampered")

    code, second = _run(local_servicebus, local_cosmos, ledger)

    assert code == 0
    assert [line["handled"] for line in first] == [True]
    assert [(line["settlement"], line["reason"]) for line in second] == [
        ("dead-letter", "PayloadMismatchError")
    ]
    assert [e["amount"] for e in _effects(ledger, "evt-1")] == [5]
    assert local_servicebus.stats.dead_lettered == {f"{TOPIC}/Subscriptions/{SUBSCRIPTION}": 1}
    with (
        ServiceBusClient.from_connection_string(
            local_servicebus.connection_string, retry_total=0
        ) as client,
        client.get_subscription_receiver(
            TOPIC, SUBSCRIPTION, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5
        ) as receiver,
    ):
        [dead] = receiver.receive_messages(max_message_count=5, max_wait_time=5)
        receiver.complete_message(dead)
    assert dead.message_id == "evt-1-tampered"
    assert dead.dead_letter_reason == "PayloadMismatchError"
    assert "evt-1" in (dead.dead_letter_error_description or "")


def test_consumers_racing_on_one_event_id_commit_one_effect(
    local_servicebus: LocalServiceBus,
    local_cosmos: LocalCosmos,
    ledger: ContainerProxy,
    tmp_path: Path,
) -> None:
    # The same event twice under two message ids: two consumers get one each.
    _send(local_servicebus, _event("evt-race", 7))
    _send(local_servicebus, _event("evt-race", 7), message_id="evt-race-again")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CONSUMER_BATCH": "1",
        "CONSUMER_BARRIER": f"{tmp_path}:2",
    }
    command = _command(local_servicebus, local_cosmos, ledger)
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for _ in range(2)
    ]
    outputs: list[str] = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=PROCESS_SECONDS)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    lines = [json.loads(line) for output in outputs for line in output.splitlines() if line]
    assert [p.returncode for p in processes] == [0, 0]
    assert len(list(tmp_path.iterdir())) == 2  # both handlers ran before either committed
    assert sorted((line["handled"], line["duplicate"]) for line in lines) == [
        (False, True),
        (True, False),
    ]
    assert {line["settlement"] for line in lines} == {"complete"}
    assert len(_effects(ledger, "evt-race")) == 1
