"""Contract tests shared by the in-memory and the Cosmos DB inboxes: the idempotent consumer's
``Inbox`` (claims, payload hashes, positions) and the ``TransactionalInbox`` (one batch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.cosmos import DatabaseProxy, PartitionKey

from events.adapters.cosmos.inbox import CosmosTransactionalInbox
from events.adapters.cosmos.stores import CosmosInbox
from events.core.consumer import IdempotentConsumer, Inbox, InMemoryInbox, payload_hash
from events.core.envelope import IntegrationEvent, sequence_of
from events.core.inbox import (
    InMemoryTransactionalInbox,
    TransactionalConsumer,
    TransactionalInbox,
    UnitOfWork,
)
from events.core.ordering import OrderPolicy, Position
from events.errors import (
    EventInProgressError,
    InboxConflictError,
    InboxError,
    PayloadMismatchError,
)

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BACKENDS = ["memory", pytest.param("cosmos", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def inbox(request: pytest.FixtureRequest) -> Inbox:
    if request.param == "memory":
        return InMemoryInbox()
    database: DatabaseProxy = request.getfixturevalue("cosmos_database")
    return CosmosInbox(
        database.create_container(
            id="inbox", partition_key=PartitionKey(path="/consumer"), default_ttl=1_209_600
        )
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> TransactionalInbox:
    if request.param == "memory":
        return InMemoryTransactionalInbox()
    database: DatabaseProxy = request.getfixturevalue("cosmos_database")
    return CosmosTransactionalInbox(
        database.create_container(
            id="ledger", partition_key=PartitionKey(path="/partitionKey"), default_ttl=-1
        )
    )


def _event(
    event_id: str, amount: int = 1, sequence: int | None = None, partitionkey: str = "acct-1"
) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/test",
        type="OrderPlaced",
        subject="order-1",
        time=NOW,
        data={"amount": amount},
        partitionkey=partitionkey,
        sequence=None if sequence is None else sequence_of(sequence),
    )


# ---------------------------------------------------------------- idempotent consumer inbox


def test_inbox_consumer_handles_each_event_id_once(inbox: Inbox) -> None:
    handled: list[str] = []
    consumer = IdempotentConsumer("billing", inbox, lambda e: handled.append(e.id))

    outcomes = [consumer.handle(_event(i)) for i in ("a", "b", "a", "b", "c")]

    assert handled == ["a", "b", "c"]
    assert [o.duplicate for o in outcomes] == [False, False, True, True, False]
    assert (consumer.handled, consumer.duplicates) == (3, 2)


def test_inbox_consumers_are_independent(inbox: Inbox) -> None:
    handled: list[str] = []
    IdempotentConsumer("billing", inbox, lambda e: handled.append("billing")).handle(_event("a"))

    IdempotentConsumer("shipping", inbox, lambda e: handled.append("shipping")).handle(_event("a"))

    assert handled == ["billing", "shipping"]


def test_inbox_handler_failure_releases_the_claim_so_redelivery_retries(inbox: Inbox) -> None:
    attempts: list[str] = []

    def flaky(event: IntegrationEvent) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("downstream unavailable")

    consumer = IdempotentConsumer("billing", inbox, flaky)
    with pytest.raises(RuntimeError):
        consumer.handle(_event("a"))

    assert consumer.handle(_event("a")).handled
    assert attempts == ["a", "a"]


def test_inbox_redelivered_id_with_another_payload_is_refused(inbox: Inbox) -> None:
    handled: list[int] = []
    consumer = IdempotentConsumer("billing", inbox, lambda e: handled.append(e.data["amount"]))
    consumer.handle(_event("a", amount=1))

    with pytest.raises(PayloadMismatchError):
        consumer.handle(_event("a", amount=2))

    assert handled == [1]


def test_inbox_live_claim_refuses_and_expired_claim_is_taken_over(inbox: Inbox) -> None:
    now = [NOW]
    digest = payload_hash(_event("a"))
    assert inbox.create("billing", "a", digest, NOW + timedelta(seconds=30), 600) is not None
    assert inbox.create("billing", "a", digest, NOW + timedelta(seconds=30), 600) is None
    handled: list[str] = []
    consumer = IdempotentConsumer(
        "billing", inbox, lambda e: handled.append(e.id), clock=lambda: now[0]
    )

    with pytest.raises(EventInProgressError):
        consumer.handle(_event("a"))
    now[0] = NOW + timedelta(seconds=31)

    assert consumer.handle(_event("a")).handled
    assert consumer.handle(_event("a")).duplicate
    assert handled == ["a"]


def test_inbox_writes_with_a_stale_version_do_nothing(inbox: Inbox) -> None:
    claimed = inbox.create("billing", "a", "h", NOW, 600)
    assert claimed is not None
    taken = inbox.take_over(claimed, NOW + timedelta(seconds=60), 600)
    assert taken is not None

    assert inbox.take_over(claimed, NOW, 600) is None
    assert inbox.complete(claimed, 600) is False
    inbox.release(claimed)  # stale: the record stays
    current = inbox.entry("billing", "a")
    assert current is not None
    assert current.version == taken.version
    assert inbox.complete(taken, 600) is True
    assert inbox.entry("billing", "a") is not None


def test_inbox_position_is_written_only_over_the_expected_one(inbox: Inbox) -> None:
    first = Position("/test", "acct-1", 3)
    assert inbox.position("billing", "/test", "acct-1") is None
    assert inbox.save_position("billing", first, None) is True
    assert inbox.save_position("billing", first, None) is False
    stored = inbox.position("billing", "/test", "acct-1")
    assert stored is not None
    assert stored.sequence == 3

    assert inbox.save_position("billing", Position("/test", "acct-1", 5), stored) is True
    assert inbox.save_position("billing", Position("/test", "acct-1", 9), stored) is False
    latest = inbox.position("billing", "/test", "acct-1")
    assert latest is not None
    assert latest.sequence == 5
    assert inbox.position("shipping", "/test", "acct-1") is None


def test_inbox_late_event_is_detected_from_the_stored_position(inbox: Inbox) -> None:
    handled: list[str] = []
    policy = OrderPolicy()
    consumer = IdempotentConsumer("billing", inbox, lambda e: handled.append(e.id), ordering=policy)
    consumer.handle(_event("a", sequence=7))

    again = IdempotentConsumer("billing", inbox, lambda e: handled.append(e.id), ordering=policy)

    assert again.handle(_event("b", sequence=6)).late
    assert again.handle(_event("c", sequence=8)).handled
    assert handled == ["a", "c"]


@pytest.mark.integration
def test_cosmos_inbox_record_carries_state_hash_expiry_and_ttl(
    cosmos_database: DatabaseProxy,
) -> None:
    container = cosmos_database.create_container(
        id="inbox", partition_key=PartitionKey(path="/consumer"), default_ttl=1_209_600
    )
    IdempotentConsumer("billing", CosmosInbox(container), lambda e: None).handle(_event("a"))

    item = container.read_item("a", partition_key="billing")

    assert item["state"] == "done"
    assert item["payloadHash"] == payload_hash(_event("a"))
    assert item["ttl"] == 1_209_600
    assert "claimExpiresAt" in item


@pytest.mark.integration
def test_cosmos_inbox_record_from_before_claims_reads_as_done(
    cosmos_database: DatabaseProxy,
) -> None:
    container = cosmos_database.create_container(
        id="inbox", partition_key=PartitionKey(path="/consumer")
    )
    container.upsert_item({"id": "a", "consumer": "billing"})
    handled: list[str] = []

    outcome = IdempotentConsumer(
        "billing", CosmosInbox(container), lambda e: handled.append(e.id)
    ).handle(_event("a", amount=5))

    assert outcome.duplicate
    assert handled == []


# ---------------------------------------------------------------- transactional inbox


def _credit(event: IntegrationEvent, unit: UnitOfWork) -> None:
    account = unit.read("balance")
    if account is None:
        unit.create({"id": "balance", "partitionKey": unit.partition_key, "total": 0})
        unit.patch("balance", [{"op": "incr", "path": "/total", "value": event.data["amount"]}])
    else:
        unit.replace(
            {**_plain(account), "total": account["total"] + event.data["amount"]},
            if_match=account["_etag"],
        )
    unit.create({"id": f"line-{event.id}", "partitionKey": unit.partition_key})


def _plain(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


def _total(store: TransactionalInbox, partition_key: str = "acct-1") -> object:
    document = store.read(partition_key, "balance")
    return None if document is None else document["total"]


def test_transactional_inbox_commits_each_event_once(store: TransactionalInbox) -> None:
    consumer = TransactionalConsumer("ledger", store, _credit)

    outcomes = [consumer.handle(_event(i, amount=n)) for i, n in (("a", 5), ("b", 7), ("a", 5))]

    assert [(o.handled, o.duplicate) for o in outcomes] == [(True, False)] * 2 + [(False, True)]
    assert _total(store) == 12
    assert store.read("acct-1", "line-a") is not None


def test_transactional_inbox_commit_race_writes_one_effect(store: TransactionalInbox) -> None:
    winner = TransactionalConsumer("ledger", store, _credit)

    def credit_while_racing(event: IntegrationEvent, unit: UnitOfWork) -> None:
        _credit(event, unit)
        winner.handle(event)

    outcome = TransactionalConsumer("ledger", store, credit_while_racing).handle(_event("a", 5))

    assert outcome.duplicate
    assert _total(store) == 5


def test_transactional_inbox_changed_payload_is_refused(store: TransactionalInbox) -> None:
    consumer = TransactionalConsumer("ledger", store, _credit)
    consumer.handle(_event("a", amount=5))

    with pytest.raises(PayloadMismatchError):
        consumer.handle(_event("a", amount=6))

    assert _total(store) == 5


def test_transactional_inbox_refused_operation_writes_nothing(store: TransactionalInbox) -> None:
    def credit_then_delete_missing(event: IntegrationEvent, unit: UnitOfWork) -> None:
        _credit(event, unit)
        unit.delete("missing")

    with pytest.raises(InboxError) as raised:
        TransactionalConsumer("ledger", store, credit_then_delete_missing).handle(_event("a"))

    assert raised.value.status == 404
    assert raised.value.ids["document"] == "missing"
    assert store.read("acct-1", "balance") is None
    assert TransactionalConsumer("ledger", store, _credit).handle(_event("a")).handled


def test_transactional_inbox_stale_etag_raises_conflict(store: TransactionalInbox) -> None:
    TransactionalConsumer("ledger", store, _credit).handle(_event("a", amount=1))

    def credit_after_a_concurrent_credit(event: IntegrationEvent, unit: UnitOfWork) -> None:
        _credit(event, unit)
        TransactionalConsumer("ledger", store, _credit).handle(_event("b", amount=10))

    with pytest.raises(InboxConflictError):
        TransactionalConsumer("ledger", store, credit_after_a_concurrent_credit).handle(
            _event("c", amount=100)
        )

    assert _total(store) == 11


def test_transactional_inbox_position_race_raises_conflict(store: TransactionalInbox) -> None:
    policy = OrderPolicy()

    def credit_while_the_stream_moves(event: IntegrationEvent, unit: UnitOfWork) -> None:
        unit.create({"id": f"line-{event.id}", "partitionKey": unit.partition_key})
        TransactionalConsumer("ledger", store, _credit, ordering=policy).handle(
            _event("b", sequence=2)
        )

    with pytest.raises(InboxConflictError):
        TransactionalConsumer(
            "ledger", store, credit_while_the_stream_moves, ordering=policy
        ).handle(_event("a", sequence=1))

    assert store.read("acct-1", "line-a") is None
    late = TransactionalConsumer("ledger", store, _credit, ordering=policy).handle(
        _event("a", sequence=1)
    )
    assert late.late
