"""A small consumer run as a child process by the crash tests.

    python consumer_script.py SB_CONNECTION TOPIC SUBSCRIPTION COSMOS_ENDPOINT KEY DATABASE \
        CONTAINER CONSUMER

It receives from the subscription with azure-servicebus, handles each event through the
transactional inbox on Cosmos DB (the effect: one ``effect`` document with a random id, so a
second commit would show as a second document), settles each message with
``events.adapters.receiving`` and prints one JSON line per settled message. It stops when a
receive comes back empty.

- ``CONSUMER_MODE=idempotent``: the idempotent consumer instead, its inbox in the ``inbox``
  container of the same database, the effect written by the handler itself.
- ``CONSUMER_CRASH_AFTER_COMMIT=1``: SIGKILL itself after the commit (the done mark in the
  idempotent mode), before the completion.
- ``CONSUMER_BARRIER=DIR:N``: each handler run waits (at most 20 s) until N runs, of any
  process, are inside a handler, so that N consumers race on their commits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import urllib3
from azure.cosmos import CosmosClient
from azure.servicebus import ServiceBusClient

from events.adapters.cosmos.inbox import CosmosTransactionalInbox
from events.adapters.cosmos.stores import CosmosInbox
from events.adapters.receiving import Settled, receive_until_idle
from events.core.consumer import IdempotentConsumer, Outcome
from events.core.envelope import IntegrationEvent
from events.core.inbox import TransactionalConsumer, UnitOfWork

_BARRIER_SECONDS = 20.0


def _barrier(spec: str) -> None:
    directory, count = spec.rsplit(":", 1)
    Path(directory, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + _BARRIER_SECONDS
    while len(list(Path(directory).iterdir())) < int(count) and time.monotonic() < deadline:
        time.sleep(0.05)


def _effect_document(event: IntegrationEvent) -> dict[str, object]:
    barrier = os.environ.get("CONSUMER_BARRIER")
    if barrier:
        _barrier(barrier)
    return {
        "id": f"effect-{uuid.uuid4()}",
        "partitionKey": event.partitionkey,
        "kind": "effect",
        "eventId": event.id,
        "amount": event.data.get("amount"),
    }


def _effect(event: IntegrationEvent, unit: UnitOfWork) -> None:
    unit.create(_effect_document(event))


class CrashingConsumer:
    """The consumer, killed after its commit when asked: the message stays unsettled."""

    def __init__(self, consumer: TransactionalConsumer | IdempotentConsumer, crash: bool) -> None:
        self.name = consumer.name
        self._consumer = consumer
        self._crash = crash

    def handle(self, event: IntegrationEvent) -> Outcome:
        outcome = self._consumer.handle(event)
        if self._crash and outcome.handled:
            os.kill(os.getpid(), signal.SIGKILL)
        return outcome


def _print(settled: Settled) -> None:
    outcome = settled.outcome
    line = {
        "event": settled.event_id,
        "settlement": settled.settlement,
        "reason": settled.reason,
        "handled": outcome.handled if outcome else None,
        "duplicate": outcome.duplicate if outcome else None,
    }
    print(json.dumps(line), flush=True)


def main(argv: list[str]) -> int:
    connection, topic, subscription, endpoint, key, database_id, container_id, name = argv
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    cosmos = CosmosClient(endpoint, credential=key, connection_verify=False)
    database = cosmos.get_database_client(database_id)
    container = database.get_container_client(container_id)
    inner: TransactionalConsumer | IdempotentConsumer
    if os.environ.get("CONSUMER_MODE") == "idempotent":
        inbox = CosmosInbox(database.get_container_client("inbox"))

        def effect_elsewhere(event: IntegrationEvent) -> None:
            container.create_item(_effect_document(event))

        inner = IdempotentConsumer(name, inbox, effect_elsewhere)
    else:
        inner = TransactionalConsumer(name, CosmosTransactionalInbox(container), _effect)
    consumer = CrashingConsumer(inner, crash=os.environ.get("CONSUMER_CRASH_AFTER_COMMIT") == "1")
    batch = int(os.environ.get("CONSUMER_BATCH", "10"))
    with (
        ServiceBusClient.from_connection_string(connection, retry_total=0) as client,
        client.get_subscription_receiver(topic, subscription, max_wait_time=5) as receiver,
    ):
        receive_until_idle(receiver, consumer, batch=batch, wait_seconds=3, on_settled=_print)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
