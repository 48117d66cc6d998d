"""The demo ledger: written events and each order's final CDC state, against what arrived."""

from __future__ import annotations

from datetime import UTC, datetime

from devstack.demo.ledger import CDC_EVENT_TYPE, Ledger, Tally
from events.core.envelope import IntegrationEvent

TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _event(event_id: str, event_type: str, order: str, **data: object) -> IntegrationEvent:
    return IntegrationEvent(
        id=event_id,
        source="/integration-relay/orders",
        type=event_type,
        subject=order,
        time=TIME,
        data={"orderId": order, **data},
        partitionkey=order,
    )


def _upserted(event_id: str, order: str, status: str) -> IntegrationEvent:
    return _event(event_id, CDC_EVENT_TYPE, order, status=status)


def _got(ledger: Ledger, event: IntegrationEvent) -> None:
    ledger.got(event, "integration-events")


def test_ledger_nothing_arrived_everything_missing() -> None:
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    ledger.wrote(["auth-2", "captured-2"], "order-2", "paid")

    assert ledger.tally() == Tally(written=3, cdc=2, received=0, duplicates=0)
    assert ledger.missing() == 5


def test_ledger_events_and_final_states_arrived_nothing_missing() -> None:
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    _got(ledger, _event("placed-1", "OrderPlaced", "order-1"))
    _got(ledger, _upserted("cdc-1", "order-1", "placed"))

    assert ledger.tally() == Tally(written=1, cdc=1, received=2, duplicates=0)
    assert ledger.missing() == 0


def test_ledger_merged_intermediate_state_only_final_state_counts() -> None:
    # placed then paid quickly: the change feed may deliver only the paid version.
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    ledger.wrote(["auth-1", "captured-1"], "order-1", "paid")
    for event_id, event_type in [
        ("placed-1", "OrderPlaced"),
        ("auth-1", "PaymentAuthorized"),
        ("captured-1", "PaymentCaptured"),
    ]:
        _got(ledger, _event(event_id, event_type, "order-1"))
    _got(ledger, _upserted("cdc-paid", "order-1", "paid"))

    assert ledger.tally() == Tally(written=3, cdc=1, received=4, duplicates=0)
    assert ledger.missing() == 0


def test_ledger_only_an_earlier_state_arrived_order_missing() -> None:
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    ledger.wrote(["shipped-1"], "order-1", "shipped")
    _got(ledger, _event("placed-1", "OrderPlaced", "order-1"))
    _got(ledger, _event("shipped-1", "OrderShipped", "order-1"))
    _got(ledger, _upserted("cdc-placed", "order-1", "placed"))

    assert ledger.tally().received == 2
    assert ledger.missing() == 1


def test_ledger_older_state_redelivered_after_final_still_arrived() -> None:
    ledger = Ledger()
    ledger.wrote([], "order-1", "paid")
    _got(ledger, _upserted("cdc-paid", "order-1", "paid"))
    _got(ledger, _upserted("cdc-placed", "order-1", "placed"))

    assert ledger.missing() == 0


def test_ledger_unexpected_event_id_not_counted_as_received() -> None:
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    _got(ledger, _event("someone-else", "OrderPlaced", "order-1"))

    assert ledger.tally().received == 0
    assert ledger.missing() == 2


def test_ledger_duplicates_counted_not_received_twice() -> None:
    ledger = Ledger()
    ledger.wrote(["placed-1"], "order-1", "placed")
    _got(ledger, _event("placed-1", "OrderPlaced", "order-1"))
    ledger.duplicate()

    assert ledger.tally() == Tally(written=1, cdc=1, received=1, duplicates=1)
    assert ledger.counts() == (1, 1, 1)


def test_ledger_every_handled_event_counts_as_progress() -> None:
    ledger = Ledger()
    _got(ledger, _upserted("cdc-a", "order-1", "placed"))
    _got(ledger, _upserted("cdc-b", "order-1", "paid"))

    assert ledger.handled == 2
