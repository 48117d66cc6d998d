"""Re-driving one aggregate's quarantined records in change order, stopping at the first that
stays quarantined, and releasing the aggregate, also while the relay keeps parking changes."""

from __future__ import annotations

import dataclasses

from events.core.publisher import InMemoryPublisher
from events.core.quarantine import (
    InMemoryQuarantine,
    ParkedAggregate,
    QuarantineReason,
    QuarantineRecord,
)
from events.hosts.redrive import change_order, redrive_aggregate
from events.hosts.runtime import Runtime
from tests import factories
from tests.interleaving import Interleaving

FEED = "relay_orders"


def _parked(
    order_id: str, quarantine: InMemoryQuarantine | None = None
) -> tuple[Runtime, InMemoryPublisher, InMemoryQuarantine]:
    """An invalid change of ``order_id`` and two later changes parked behind it."""
    runtime, publisher, store = factories.in_memory_runtime(quarantine=quarantine)
    runtime.relay(FEED).process(
        [
            factories.order(order_id, status="teleported"),
            factories.shipped(order_id, "e-2"),
            factories.shipped(order_id, "e-3"),
            factories.placed("other", "e-9"),
        ]
    )
    return runtime, publisher, store


def _fix(quarantine: InMemoryQuarantine, record: QuarantineRecord) -> None:
    """What a fix of the mapping amounts to here: the stored document now maps."""
    assert record.document is not None
    fixed = {**record.document, "status": "placed"}
    quarantine.records[record.id] = dataclasses.replace(record, document=fixed)


def _fix_invalid(quarantine: InMemoryQuarantine) -> None:
    for record in quarantine.list():
        if record.reason is QuarantineReason.INVALID_DOCUMENT:
            _fix(quarantine, record)


def _ids(publisher: InMemoryPublisher, session: str) -> list[str]:
    delivered = publisher.delivered["integration-events"]
    return [m.message_id for m in delivered if m.session_id == session]


def test_redrive_aggregate_first_still_invalid_stops_and_publishes_nothing() -> None:
    runtime, publisher, quarantine = _parked("o-1")
    before = {m.message_id for m in publisher.delivered["integration-events"]}

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)

    assert [r.reason for r, _ in done.outcomes] == [
        QuarantineReason.INVALID_DOCUMENT,
        QuarantineReason.BLOCKED_BEHIND_QUARANTINED,
        QuarantineReason.BLOCKED_BEHIND_QUARANTINED,
    ]
    assert done.outcomes[0][1] is not None
    assert not done.outcomes[0][1].resolved
    assert [result for _, result in done.outcomes[1:]] == [None, None]
    assert not done.released
    assert {m.message_id for m in publisher.delivered["integration-events"]} == before
    assert len(quarantine.list()) == 3
    assert (FEED, "o-1") in quarantine.parks


def test_redrive_aggregate_fixed_publishes_every_change_in_lsn_order_and_releases() -> None:
    runtime, publisher, quarantine = _parked("o-1")
    _fix_invalid(quarantine)

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)

    assert done.released
    assert all(result is not None and result.resolved for _, result in done.outcomes)
    assert quarantine.list() == []
    assert quarantine.parks == {}
    assert _ids(publisher, "o-1")[-2:] == [
        factories.outbox_id("o-1", "e-2"),
        factories.outbox_id("o-1", "e-3"),
    ]
    runtime.relay(FEED).process([factories.shipped("o-1", "e-4")])  # released: published again
    assert _ids(publisher, "o-1")[-1] == factories.outbox_id("o-1", "e-4")


def test_redrive_aggregate_records_quarantined_out_of_order_redriven_by_lsn() -> None:
    runtime, _, quarantine = _parked("o-1")
    records = change_order(quarantine.list())
    _fix(quarantine, records[0])
    # Quarantined later but changed earlier: the lsn decides, not the quarantine time.
    late = quarantine.records[records[1].id]
    quarantine.records[late.id] = dataclasses.replace(
        late, quarantined_at=records[2].quarantined_at.replace(year=2030)
    )

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)

    assert [record.lsn for record, _ in done.outcomes] == sorted(r.lsn or 0 for r in records)


def test_redrive_aggregate_blocked_fails_again_later_records_stay_parked() -> None:
    runtime, _, quarantine = _parked("o-1")
    first, second, third = change_order(quarantine.list())
    invalid = dict(first.document or {})
    _fix(quarantine, first)
    # The second change fails on its own now: it maps to an invalid event.
    quarantine.records[second.id] = dataclasses.replace(
        second, document={**invalid, "id": second.document_id, "_lsn": second.lsn}
    )

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)

    states = [(r.id, None if res is None else res.resolved) for r, res in done.outcomes]
    assert states == [(first.id, True), (second.id, False), (third.id, None)]
    assert {r.id for r in quarantine.list()} == {second.id, third.id}
    assert not done.released
    assert (FEED, "o-1") in quarantine.parks


def test_redrive_aggregate_change_parked_after_listing_is_redriven_in_a_second_round() -> None:
    store = Interleaving()
    runtime, publisher, quarantine = _parked("o-1", store)
    _fix_invalid(quarantine)
    late = factories.shipped("o-1", "e-4")
    # The relay parks a new change after the re-drive listed the records, before it releases.
    store.after_records_of = lambda: runtime.relay(FEED).process([late])

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)

    assert done.released
    assert _ids(publisher, "o-1")[-3:] == [
        factories.outbox_id("o-1", "e-2"),
        factories.outbox_id("o-1", "e-3"),
        factories.outbox_id("o-1", "e-4"),
    ]
    assert quarantine.list() == []
    assert quarantine.parks == {}


def test_redrive_aggregate_change_parked_as_it_releases_stays_parked_not_overtaken() -> None:
    store = Interleaving()
    runtime, publisher, quarantine = _parked("o-1", store)
    _fix_invalid(quarantine)
    relay = runtime.relay(FEED)
    late = factories.shipped("o-1", "e-4")
    # The relay found the aggregate parked, then the re-drive released it, then the relay
    # wrote the record and parked the aggregate again.
    store.after_parked = lambda: redrive_aggregate(FEED, "o-1", runtime, quarantine)

    relay.process([late])
    relay.process([factories.shipped("o-1", "e-5")])  # the next batch: still parked behind e-4

    assert factories.outbox_id("o-1", "e-4") not in _ids(publisher, "o-1")
    assert factories.outbox_id("o-1", "e-5") not in _ids(publisher, "o-1")
    assert {r.document_id for r in quarantine.list()} == {"e-4", "e-5"}
    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)
    assert done.released
    assert _ids(publisher, "o-1")[-2:] == [
        factories.outbox_id("o-1", "e-4"),
        factories.outbox_id("o-1", "e-5"),
    ]


def test_redrive_aggregate_released_before_the_relays_check_lets_the_change_through() -> None:
    store = Interleaving()
    runtime, publisher, quarantine = _parked("o-1", store)
    _fix_invalid(quarantine)

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine)
    runtime.relay(FEED).process([factories.shipped("o-1", "e-4")])

    assert done.released
    assert _ids(publisher, "o-1")[-3:] == [
        factories.outbox_id("o-1", "e-2"),
        factories.outbox_id("o-1", "e-3"),
        factories.outbox_id("o-1", "e-4"),
    ]


class ParkedAgainEachTime(InMemoryQuarantine):
    """A relay that parks a change of the aggregate just before every release."""

    def release(self, parked: ParkedAggregate) -> bool:
        self.park(parked.feed, parked.partition_key, factories.FIXED_TIME, parked.from_lsn)
        return super().release(parked)


def test_redrive_aggregate_parked_again_every_round_gives_up_still_parked() -> None:
    runtime, _, quarantine = _parked("o-1", ParkedAgainEachTime())
    _fix_invalid(quarantine)

    done = redrive_aggregate(FEED, "o-1", runtime, quarantine, rounds=3)

    assert not done.released
    assert (FEED, "o-1") in quarantine.parks
