"""The transactional consumer on the in-memory transactional inbox: one batch or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from events.core.consumer import Outcome
from events.core.envelope import IntegrationEvent
from events.core.inbox import (
    InboxRecord,
    InMemoryTransactionalInbox,
    Operation,
    TransactionalConsumer,
    UnitOfWork,
    apply_patch,
)
from events.errors import (
    DuplicateEventError,
    InboxConflictError,
    InboxError,
    InboxTooLargeError,
    InboxTooManyOperationsError,
    PayloadMismatchError,
    is_transient,
)

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _event(
    event_id: str = "e-1", amount: int = 10, partitionkey: str = "acct-1"
) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/payments",
        type="PaymentCaptured",
        subject=partitionkey,
        time=NOW,
        data={"amount": amount},
        partitionkey=partitionkey,
    )


def _credit(event: IntegrationEvent, unit: UnitOfWork) -> None:
    account = unit.read("balance") or {
        "id": "balance",
        "partitionKey": unit.partition_key,
        "total": 0,
    }
    unit.upsert({**account, "total": account["total"] + event.data["amount"]})
    unit.create(
        {
            "id": f"line-{event.id}",
            "partitionKey": unit.partition_key,
            "amount": event.data["amount"],
        }
    )


def _balance(inbox: InMemoryTransactionalInbox, partition_key: str = "acct-1") -> Any:
    document = inbox.read(partition_key, "balance")
    return None if document is None else document["total"]


def test_transactional_consumer_commits_writes_and_record_once_per_event_id() -> None:
    inbox = InMemoryTransactionalInbox()
    consumer = TransactionalConsumer("ledger", inbox, _credit)

    outcomes = [consumer.handle(_event(i)) for i in ("a", "b", "a")]

    assert outcomes == [
        Outcome(handled=True, duplicate=False),
        Outcome(handled=True, duplicate=False),
        Outcome(handled=False, duplicate=True),
    ]
    assert _balance(inbox) == 20
    assert inbox.commits == 2
    kinds = sorted(str(d.get("kind", "effect")) for d in inbox.documents("acct-1"))
    assert kinds == ["effect", "effect", "effect", "inbox", "inbox"]


def test_transactional_consumer_record_conflict_at_commit_writes_nothing_and_is_duplicate() -> None:
    inbox = InMemoryTransactionalInbox()
    racing = TransactionalConsumer("ledger", inbox, _credit)

    def credit_while_another_commits(event: IntegrationEvent, unit: UnitOfWork) -> None:
        _credit(event, unit)
        assert racing.handle(event).handled  # the other delivery wins the race

    outcome = TransactionalConsumer("ledger", inbox, credit_while_another_commits).handle(_event())

    assert outcome.duplicate
    assert _balance(inbox) == 10


def test_transactional_consumer_handler_failure_writes_nothing() -> None:
    inbox = InMemoryTransactionalInbox()

    def failing(event: IntegrationEvent, unit: UnitOfWork) -> None:
        _credit(event, unit)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        TransactionalConsumer("ledger", inbox, failing).handle(_event())

    assert inbox.documents("acct-1") == []
    assert TransactionalConsumer("ledger", inbox, _credit).handle(_event()).handled


def test_transactional_consumer_refused_operation_rolls_back_the_record() -> None:
    inbox = InMemoryTransactionalInbox()
    consumer = TransactionalConsumer("ledger", inbox, lambda e, u: u.delete("missing"))

    with pytest.raises(InboxError) as raised:
        consumer.handle(_event())

    assert raised.value.status == 404
    assert not is_transient(raised.value)
    assert inbox.documents("acct-1") == []


def test_transactional_consumer_stale_etag_is_a_transient_conflict() -> None:
    inbox = InMemoryTransactionalInbox()
    TransactionalConsumer("ledger", inbox, _credit).handle(_event("a"))

    def replace_after_another_write(event: IntegrationEvent, unit: UnitOfWork) -> None:
        balance = unit.read("balance")
        assert balance is not None
        TransactionalConsumer("ledger", inbox, _credit).handle(_event("b"))  # concurrent write
        unit.replace({**balance, "total": 0}, if_match=balance["_etag"])

    with pytest.raises(InboxConflictError) as raised:
        TransactionalConsumer("ledger", inbox, replace_after_another_write).handle(_event("c"))

    assert is_transient(raised.value)
    assert _balance(inbox) == 20


def test_transactional_consumer_redelivery_with_other_payload_raises_mismatch() -> None:
    inbox = InMemoryTransactionalInbox()
    consumer = TransactionalConsumer("ledger", inbox, _credit)
    consumer.handle(_event(amount=10))

    with pytest.raises(PayloadMismatchError):
        consumer.handle(_event(amount=11))

    assert _balance(inbox) == 10


def test_transactional_consumer_over_100_operations_is_refused_before_the_store() -> None:
    inbox = InMemoryTransactionalInbox()

    def many(event: IntegrationEvent, unit: UnitOfWork) -> None:
        for i in range(100):  # + the inbox record = 101
            unit.create({"id": f"d{i}", "partitionKey": unit.partition_key})

    with pytest.raises(InboxTooManyOperationsError) as raised:
        TransactionalConsumer("ledger", inbox, many).handle(_event())

    assert (raised.value.size, raised.value.limit) == (101, 100)
    assert inbox.commits == 0


def test_transactional_consumer_over_2_mb_is_refused_with_size_and_limit() -> None:
    inbox = InMemoryTransactionalInbox()

    def large(event: IntegrationEvent, unit: UnitOfWork) -> None:
        unit.create({"id": "big", "partitionKey": unit.partition_key, "blob": "x" * 2_100_000})

    with pytest.raises(InboxTooLargeError) as raised:
        TransactionalConsumer("ledger", inbox, large).handle(_event())

    assert raised.value.limit == 2 * 1024 * 1024
    assert (raised.value.size or 0) > 2_100_000


def test_transactional_consumer_writes_go_to_the_chosen_partition() -> None:
    inbox = InMemoryTransactionalInbox()
    consumer = TransactionalConsumer("ledger", inbox, _credit, partition_key=lambda e: "books")

    consumer.handle(_event("a", partitionkey="acct-1"))
    consumer.handle(_event("b", partitionkey="acct-2"))

    assert _balance(inbox, "books") == 20
    assert inbox.documents("acct-1") == []


def test_transactional_inbox_duplicate_commit_raises_duplicate_event_error() -> None:
    inbox = InMemoryTransactionalInbox()
    record = InboxRecord("ledger", "e-1", "hash", 600)
    inbox.commit(_event(), record, "acct-1", [])

    with pytest.raises(DuplicateEventError):
        inbox.commit(
            _event(),
            record,
            "acct-1",
            [Operation("upsert", "x", {"id": "x", "partitionKey": "acct-1"})],
        )

    assert inbox.read("acct-1", "x") is None


def test_unit_of_work_document_without_id_is_refused() -> None:
    unit = UnitOfWork("acct-1", lambda document_id: None)

    with pytest.raises(InboxError):
        unit.upsert({"partitionKey": "acct-1"})


def test_apply_patch_sets_increments_and_removes_members() -> None:
    document: dict[str, Any] = {"id": "d", "total": 1, "meta": {"a": 1}, "old": True}

    apply_patch(
        document,
        [
            {"op": "incr", "path": "/total", "value": 4},
            {"op": "set", "path": "/meta/b", "value": 2},
            {"op": "remove", "path": "/old"},
        ],
    )

    assert document == {"id": "d", "total": 5, "meta": {"a": 1, "b": 2}}
    with pytest.raises(KeyError):
        apply_patch(document, [{"op": "replace", "path": "/absent", "value": 1}])
