"""The hardened idempotent consumer on the in-memory inbox: claims, expiry, payload hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.core.consumer import IdempotentConsumer, InMemoryInbox, Outcome, payload_hash
from events.core.envelope import IntegrationEvent, sequence_of
from events.errors import EventInProgressError, PayloadMismatchError, is_transient
from tests.clock import ManualClock

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _event(
    event_id: str = "e-1", amount: int = 10, sequence: int | None = None
) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/orders",
        type="OrderPlaced",
        subject="order-1",
        time=START,
        data={"amount": amount},
        partitionkey="order-1",
        sequence=None if sequence is None else sequence_of(sequence),
    )


def test_payload_hash_ignores_time_and_traceparent_but_not_data() -> None:
    event = _event()
    restamped = event.model_copy(
        update={
            "time": START + timedelta(hours=1),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
    )

    assert payload_hash(restamped) == payload_hash(event)
    assert payload_hash(_event(amount=11)) != payload_hash(event)
    assert payload_hash(event.model_copy(update={"type": "OrderPaid"})) != payload_hash(event)


def test_idempotent_consumer_redelivery_with_other_payload_raises_permanent_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[int] = []
    consumer = IdempotentConsumer(
        "billing", InMemoryInbox(), lambda e: handled.append(e.data["amount"])
    )
    consumer.handle(_event(amount=10))

    with pytest.raises(PayloadMismatchError) as raised:
        consumer.handle(_event(amount=99))

    assert not is_transient(raised.value)
    assert dict(raised.value.ids) == {"consumer": "billing", "event": "e-1"}
    assert handled == [10]
    assert "payload mismatch consumer=billing event=e-1" in caplog.text


def test_idempotent_consumer_live_claim_of_another_delivery_raises_transient_in_progress() -> None:
    clock = ManualClock(START)
    inbox = InMemoryInbox(clock)
    inner: list[Outcome | BaseException] = []

    def handler(event: IntegrationEvent) -> None:
        # A second delivery of the same event arrives while the first one is handling it.
        other = IdempotentConsumer("billing", inbox, lambda e: None, clock=clock)
        try:
            inner.append(other.handle(event))
        except EventInProgressError as exc:
            inner.append(exc)

    outcome = IdempotentConsumer("billing", inbox, handler, clock=clock).handle(_event())

    assert outcome == Outcome(handled=True, duplicate=False)
    assert len(inner) == 1
    assert isinstance(inner[0], EventInProgressError)
    assert is_transient(inner[0])


def test_idempotent_consumer_expired_claim_of_a_crashed_delivery_is_taken_over() -> None:
    clock = ManualClock(START)
    inbox = InMemoryInbox(clock)
    handled: list[str] = []
    crashed = IdempotentConsumer("billing", inbox, lambda e: None, clock=clock, claim_seconds=60)
    # A crash after the claim: the claim stays in progress, nobody completes nor releases it.
    entry = inbox.create(
        "billing", "e-1", payload_hash(_event()), START + timedelta(seconds=60), 600
    )
    assert entry is not None
    consumer = IdempotentConsumer(
        "billing", inbox, lambda e: handled.append(e.id), clock=clock, claim_seconds=60
    )

    with pytest.raises(EventInProgressError):
        consumer.handle(_event())
    clock.advance(61)
    outcome = consumer.handle(_event())

    assert outcome.handled
    assert handled == ["e-1"]
    assert crashed.handle(_event()).duplicate


def test_idempotent_consumer_handler_failure_releases_the_claim_for_the_redelivery() -> None:
    attempts: list[str] = []

    def flaky(event: IntegrationEvent) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("downstream unavailable")

    consumer = IdempotentConsumer("billing", InMemoryInbox(), flaky)
    with pytest.raises(RuntimeError):
        consumer.handle(_event())

    assert consumer.handle(_event()).handled
    assert attempts == ["e-1", "e-1"]


def test_idempotent_consumer_record_expires_after_retention_then_handles_again() -> None:
    clock = ManualClock(START)
    handled: list[str] = []
    consumer = IdempotentConsumer(
        "billing",
        InMemoryInbox(clock),
        lambda e: handled.append(e.id),
        clock=clock,
        retention_seconds=3600,
    )
    consumer.handle(_event())
    clock.advance(3599)
    assert consumer.handle(_event()).duplicate

    clock.advance(2)

    assert consumer.handle(_event()).handled
    assert handled == ["e-1", "e-1"]


def test_idempotent_consumer_lost_claim_is_logged_and_still_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(START)
    inbox = InMemoryInbox(clock)

    def slow(event: IntegrationEvent) -> None:
        # The claim expires while handling and another delivery takes the event over.
        clock.advance(120)
        IdempotentConsumer("billing", inbox, lambda e: None, clock=clock).handle(event)

    outcome = IdempotentConsumer("billing", inbox, slow, clock=clock, claim_seconds=60).handle(
        _event()
    )

    assert outcome.handled
    assert "claim lost consumer=billing event=e-1" in caplog.text
