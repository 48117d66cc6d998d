"""The chaos test's verdict catches each broken promise (so the chaos test can fail)."""

from __future__ import annotations

from datetime import UTC, datetime

from events.core.envelope import IntegrationEvent, sequence_of
from events.core.messages import Router, to_message
from tests.chaos.receiver import Received
from tests.chaos.verdict import judge
from tests.chaos.workload import INTEGRATION_EVENTS, Plan, Step


def _plan(final_states: dict[str, tuple[str, int]] | None = None) -> Plan:
    return Plan(
        seed=0,
        steps=(Step("order-1", "place"),),
        aggregates=1,
        final_states=final_states or {},
        poison=frozenset({("orders", "poison-1")}),
        skipped=frozenset({("orders", "skipped-1")}),
        hostile_kinds={},
    )


def _deliver(
    received: Received,
    event_id: str,
    sequence: int,
    *,
    first_delivery: bool = True,
    event_type: str = "OrderPlaced",
    data: dict[str, object] | None = None,
) -> None:
    event = IntegrationEvent(
        id=event_id,
        source="/integration-relay/orders",
        type=event_type,
        subject="order-1",
        data=data or {"orderId": "order-1"},
        time=datetime(2026, 11, 27, tzinfo=UTC),
        sequence=sequence_of(sequence),
        partitionkey="order-1",
    )
    message = to_message(event, Router(default=INTEGRATION_EVENTS))
    properties: dict[str | bytes, object] = {
        k: v for k, v in message.application_properties.items()
    }
    received.record(
        INTEGRATION_EVENTS,
        message.message_id,
        "order-1",
        first_delivery,
        message.body,
        properties,
        message.content_type,
    )


EXPECTED = {"e-1": INTEGRATION_EVENTS, "e-2": INTEGRATION_EVENTS}
ALL_QUARANTINED = frozenset({("orders", "poison-1")})


def test_judge_everything_once_in_order_is_complete_and_clean() -> None:
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)

    verdict = judge(_plan(), EXPECTED, received, ALL_QUARANTINED)

    assert verdict.complete
    assert (verdict.lost, verdict.duplicates, verdict.order_violations) == (0, 0, 0)


def test_judge_missing_event_counts_as_lost() -> None:
    received = Received()
    _deliver(received, "e-1", 5)

    verdict = judge(_plan(), EXPECTED, received, ALL_QUARANTINED)

    assert verdict.lost == 1
    assert not verdict.complete


def test_judge_second_first_delivery_counts_as_duplicate() -> None:
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)
    _deliver(received, "e-2", 7)

    assert judge(_plan(), EXPECTED, received, ALL_QUARANTINED).duplicates == 1


def test_judge_redelivery_to_the_receiver_is_not_a_duplicate() -> None:
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)
    _deliver(received, "e-2", 7, first_delivery=False)

    assert judge(_plan(), EXPECTED, received, ALL_QUARANTINED).duplicates == 0


def test_judge_sequence_decreasing_in_a_session_counts_as_order_violation() -> None:
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 4)

    assert judge(_plan(), EXPECTED, received, ALL_QUARANTINED).order_violations == 1


def test_judge_equal_sequences_in_a_session_are_in_order() -> None:
    # The writes of one transactional batch share one _lsn, hence one sequence.
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 5)

    assert judge(_plan(), EXPECTED, received, ALL_QUARANTINED).order_violations == 0


def test_judge_poison_not_quarantined_is_missing_and_skipped_one_quarantined_is_unexpected() -> (
    None
):
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)

    verdict = judge(_plan(), EXPECTED, received, {("orders", "skipped-1")})

    assert verdict.poison_missing == (("orders", "poison-1"),)
    assert verdict.unexpected_quarantined == (("orders", "skipped-1"),)
    assert not verdict.complete


def test_judge_cdc_final_state_must_be_the_newest_upsert() -> None:
    plan = _plan(final_states={"order-1": ("shipped", 120)})
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)
    upsert = {"orderId": "order-1", "customerId": "c", "currency": "EUR"}
    _deliver(
        received,
        "cdc-2",
        9,
        event_type="OrderUpserted",
        data={**upsert, "status": "shipped", "totalCents": 120},
    )
    _deliver(
        received,
        "cdc-3",
        11,
        event_type="OrderUpserted",
        data={**upsert, "status": "paid", "totalCents": 110},
    )

    verdict = judge(plan, EXPECTED, received, ALL_QUARANTINED)

    assert verdict.cdc_final_missing == 1  # a newer, different state came after it
    assert verdict.unexpected_events == 0


def test_judge_event_nobody_wrote_is_unexpected() -> None:
    received = Received()
    _deliver(received, "e-1", 5)
    _deliver(received, "e-2", 7)
    _deliver(received, "e-9", 8)

    assert judge(_plan(), EXPECTED, received, ALL_QUARANTINED).unexpected_events == 1
