"""The example consumer's handler (events.deployment.handlers.order_status): whatever order
the events of an order arrive in, and however often, the status document ends at the newest."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from events.core.envelope import IntegrationEvent, sequence_of
from events.core.handling import InMemoryConsumerStore
from events.deployment.handlers.order_status import handle

STATUSES = ("placed", "paid", "shipped", "cancelled")


def _event(number: int, event_type: str, status: str, order_id: str = "o-1") -> IntegrationEvent:
    data: dict[str, object] = {"orderId": order_id}
    if event_type == "OrderUpserted":
        data["status"] = status
    return IntegrationEvent(
        id=f"e-{number}-{event_type}",
        source="/test",
        type=event_type,
        subject=order_id,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        data=data,
        sequence=sequence_of(number),
        partitionkey=order_id,
    )


def _expected_status(event: IntegrationEvent) -> str:
    if event.type == "OrderUpserted":
        return str(event.data["status"])
    return {"OrderPlaced": "placed", "OrderShipped": "shipped", "OrderDeleted": "deleted"}[
        event.type
    ]


changes = st.lists(
    st.tuples(
        st.sampled_from(["OrderPlaced", "OrderShipped", "OrderUpserted", "OrderDeleted"]),
        st.sampled_from(STATUSES),
    ),
    min_size=1,
    max_size=8,
)


@given(changes=changes, data=st.data())
def test_order_status_any_arrival_order_with_redeliveries_ends_at_the_newest_event(
    changes: list[tuple[str, str]], data: st.DataObject
) -> None:
    events = [_event(n + 1, kind, status) for n, (kind, status) in enumerate(changes)]
    arrivals = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    store = InMemoryConsumerStore("/orderId")

    for event in arrivals:
        handle(event, store.partition(event.partitionkey))

    newest = events[-1]
    document = store.partitions["o-1"]["o-1"]
    assert (document["status"], document["eventId"]) == (_expected_status(newest), newest.id)
    assert document["orderId"] == "o-1"


def test_order_status_event_of_another_type_writes_nothing() -> None:
    store = InMemoryConsumerStore("/orderId")
    event = _event(1, "PaymentAuthorized", "placed")

    handle(event, store.partition("o-1"))

    assert store.partitions == {"o-1": {}}
