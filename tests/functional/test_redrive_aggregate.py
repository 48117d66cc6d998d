"""Re-driving one aggregate's quarantined records in change order, stopping at the first that
stays quarantined."""

from __future__ import annotations

import dataclasses

from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine, QuarantineReason, QuarantineRecord
from events.hosts.redrive import change_order, redrive_aggregate
from events.hosts.runtime import Runtime
from tests import factories


def _parked(order_id: str) -> tuple[Runtime, InMemoryPublisher, InMemoryQuarantine]:
    """An invalid change of ``order_id`` and two later changes parked behind it."""
    runtime, publisher, quarantine = factories.in_memory_runtime()
    runtime.relay("relay_orders").process(
        [
            factories.order(order_id, status="teleported"),
            factories.shipped(order_id, "e-2"),
            factories.shipped(order_id, "e-3"),
            factories.placed("other", "e-9"),
        ]
    )
    return runtime, publisher, quarantine


def _fix(quarantine: InMemoryQuarantine, record: QuarantineRecord) -> None:
    """What a fix of the mapping amounts to here: the stored document now maps."""
    assert record.document is not None
    fixed = {**record.document, "status": "placed"}
    quarantine.records[record.id] = dataclasses.replace(record, document=fixed)


def test_redrive_aggregate_first_still_invalid_stops_and_publishes_nothing() -> None:
    runtime, publisher, quarantine = _parked("o-1")
    before = {m.message_id for m in publisher.delivered["integration-events"]}

    outcomes = redrive_aggregate(quarantine.list(), runtime, quarantine)

    assert [r.reason for r, _ in outcomes] == [
        QuarantineReason.INVALID_DOCUMENT,
        QuarantineReason.BLOCKED_BEHIND_QUARANTINED,
        QuarantineReason.BLOCKED_BEHIND_QUARANTINED,
    ]
    assert outcomes[0][1] is not None
    assert not outcomes[0][1].resolved
    assert [result for _, result in outcomes[1:]] == [None, None]
    assert {m.message_id for m in publisher.delivered["integration-events"]} == before
    assert len(quarantine.list()) == 3


def test_redrive_aggregate_fixed_publishes_every_change_in_lsn_order() -> None:
    runtime, publisher, quarantine = _parked("o-1")
    records = change_order(quarantine.list())
    _fix(quarantine, records[0])
    sent_before = len(publisher.delivered["integration-events"])

    outcomes = redrive_aggregate(quarantine.list(), runtime, quarantine)

    assert all(result is not None and result.resolved for _, result in outcomes)
    assert quarantine.list() == []
    published = publisher.delivered["integration-events"][sent_before:]
    assert [m.message_id for m in published][-2:] == [
        factories.outbox_id("o-1", "e-2"),
        factories.outbox_id("o-1", "e-3"),
    ]


def test_redrive_aggregate_records_listed_out_of_order_redriven_by_lsn() -> None:
    runtime, _, quarantine = _parked("o-1")
    records = change_order(quarantine.list())
    _fix(quarantine, records[0])
    # Quarantined later but changed earlier: the lsn decides, not the quarantine time.
    late = quarantine.records[records[1].id]
    quarantine.records[late.id] = dataclasses.replace(
        late, quarantined_at=records[2].quarantined_at.replace(year=2030)
    )
    shuffled = list(reversed(quarantine.list()))

    outcomes = redrive_aggregate(shuffled, runtime, quarantine)

    assert [record.lsn for record, _ in outcomes] == sorted(r.lsn or 0 for r in records)


def test_redrive_aggregate_blocked_fails_again_later_records_stay_parked() -> None:
    runtime, _, quarantine = _parked("o-1")
    first, second, third = change_order(quarantine.list())
    invalid = dict(first.document or {})
    _fix(quarantine, first)
    # The second change fails on its own now: it maps to an invalid event.
    quarantine.records[second.id] = dataclasses.replace(
        second, document={**invalid, "id": second.document_id, "_lsn": second.lsn}
    )

    outcomes = redrive_aggregate(quarantine.list(), runtime, quarantine)

    states = [(r.id, None if res is None else res.resolved) for r, res in outcomes]
    assert states == [(first.id, True), (second.id, False), (third.id, None)]
    assert {r.id for r in quarantine.list()} == {second.id, third.id}
