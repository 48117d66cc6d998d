"""Order and gaps per (source, partition key), in both consumer modes, on in-memory stores."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from events.core.consumer import IdempotentConsumer, InMemoryInbox, Outcome
from events.core.envelope import IntegrationEvent, sequence_of
from events.core.inbox import InMemoryTransactionalInbox, TransactionalConsumer, UnitOfWork
from events.core.ordering import (
    Arrival,
    GapReport,
    OrderPolicy,
    Position,
    arrival_of,
    sequence_number,
)

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
STORE = "/eventstore"

Handle = Callable[[IntegrationEvent], Outcome]


def _event(
    sequence: int | None, partitionkey: str = "pay-1", source: str = STORE
) -> IntegrationEvent:
    return IntegrationEvent(
        id=f"{source}-{partitionkey}-{sequence}",
        source=source,
        type="PaymentCaptured",
        subject=partitionkey,
        time=NOW,
        data={"n": -1 if sequence is None else sequence},
        partitionkey=partitionkey,
        sequence=None if sequence is None else sequence_of(sequence),
    )


def test_arrival_of_equal_sequence_is_next_lower_is_late_jump_is_gap_when_contiguous() -> None:
    last = Position(STORE, "pay-1", 5)

    assert arrival_of(None, 9, contiguous=True) is Arrival.FIRST
    assert arrival_of(last, 6, contiguous=True) is Arrival.NEXT
    assert arrival_of(last, 8, contiguous=True) is Arrival.GAP
    assert arrival_of(last, 8, contiguous=False) is Arrival.NEXT
    assert arrival_of(last, 5, contiguous=False) is Arrival.NEXT  # one batch, one LSN
    assert arrival_of(last, 4, contiguous=False) is Arrival.LATE
    assert arrival_of(last, 2, contiguous=True) is Arrival.LATE


def test_sequence_number_reads_decimal_sequences_only() -> None:
    assert sequence_number(_event(42)) == 42
    assert sequence_number(_event(None)) is None
    assert sequence_number(_event(1).model_copy(update={"sequence": "abc"})) is None
    assert sequence_number(_event(1).model_copy(update={"sequence": "١٢"})) is None


@pytest.fixture(params=["idempotent", "transactional"])
def make(request: pytest.FixtureRequest) -> Callable[[OrderPolicy, list[int]], Handle]:
    """A consumer of either mode appending each handled event's sequence to a list."""

    def build(policy: OrderPolicy, handled: list[int]) -> Handle:
        if request.param == "idempotent":
            return IdempotentConsumer(
                "c", InMemoryInbox(), lambda e: handled.append(int(e.data["n"])), ordering=policy
            ).handle

        def handler(event: IntegrationEvent, unit: UnitOfWork) -> None:
            handled.append(int(event.data["n"]))

        return TransactionalConsumer(
            "c", InMemoryTransactionalInbox(), handler, ordering=policy
        ).handle

    return build


def test_consumer_late_event_is_skipped_and_logged_with_ids(
    make: Callable[[OrderPolicy, list[int]], Handle], caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[int] = []
    handle = make(OrderPolicy(), handled)
    handle(_event(5))

    outcome = handle(_event(3))

    assert outcome == Outcome(handled=False, duplicate=False, late=True)
    assert handled == [5]
    assert "late event consumer=c event=/eventstore-pay-1-3" in caplog.text
    assert "sequence=3 last=5" in caplog.text
    assert handle(_event(3)).duplicate  # a late event is recorded: its redelivery is a duplicate


def test_consumer_late_event_is_handled_when_the_policy_says_so(
    make: Callable[[OrderPolicy, list[int]], Handle],
) -> None:
    handled: list[int] = []
    handle = make(OrderPolicy(handle_late=True), handled)
    handle(_event(5))

    outcome = handle(_event(3))

    assert outcome == Outcome(handled=True, duplicate=False, late=True)
    assert handled == [5, 3]
    assert handle(_event(4)).late  # the position stays at 5


def test_consumer_gap_on_a_contiguous_stream_is_reported_and_handled(
    make: Callable[[OrderPolicy, list[int]], Handle],
) -> None:
    handled: list[int] = []
    gaps: list[GapReport] = []
    handle = make(OrderPolicy(contiguous_sources={STORE}, on_gap=gaps.append), handled)

    outcomes = [handle(_event(n)) for n in (1, 2, 5, 6)]

    assert [o.gap for o in outcomes] == [False, False, True, False]
    assert all(o.handled for o in outcomes)
    assert handled == [1, 2, 5, 6]
    assert [(g.last, g.sequence, g.missing, g.partition_key) for g in gaps] == [(2, 5, 2, "pay-1")]


def test_consumer_jump_on_a_non_contiguous_stream_is_no_gap(
    make: Callable[[OrderPolicy, list[int]], Handle],
) -> None:
    handled: list[int] = []
    handle = make(OrderPolicy(), handled)

    outcomes = [handle(_event(n, source="/orders")) for n in (10, 42)]

    assert [o.gap for o in outcomes] == [False, False]


def test_consumer_positions_are_per_source_and_partition_key(
    make: Callable[[OrderPolicy, list[int]], Handle],
) -> None:
    handled: list[int] = []
    handle = make(OrderPolicy(), handled)
    handle(_event(5))

    assert handle(_event(3, partitionkey="pay-2")).handled
    assert handle(_event(3, source="/other")).handled
    assert handle(_event(None)).handled
    assert handle(_event(4)).late


def test_consumer_without_an_order_policy_handles_older_sequences() -> None:
    handled: list[int] = []
    consumer = IdempotentConsumer("c", InMemoryInbox(), lambda e: handled.append(int(e.data["n"])))
    inbox = InMemoryTransactionalInbox()
    transactional = TransactionalConsumer("c", inbox, lambda e, u: handled.append(int(e.data["n"])))

    outcomes = [
        handle(_event(n)) for handle in (consumer.handle, transactional.handle) for n in (5, 3)
    ]

    assert [o.late for o in outcomes] == [False] * 4
    assert handled == [5, 3, 5, 3]
    assert inbox.read("pay-1", "position") is None
    assert [d["kind"] for d in inbox.documents("pay-1")] == ["inbox", "inbox"]
