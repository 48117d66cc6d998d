"""Re-driving quarantined documents through the relay they came from, aggregate by aggregate."""

from __future__ import annotations

import dataclasses

import pytest

from events.core.quarantine import InMemoryQuarantine, QuarantineReason, QuarantineRecord
from events.hosts.redrive import redrive, run_list, run_redrive
from tests import factories


def _fix(quarantine: InMemoryQuarantine, record: QuarantineRecord) -> None:
    """What a fix of the mapping amounts to here: the stored document now maps."""
    assert record.document is not None
    fixed = {**record.document, "status": "placed"}
    quarantine.records[record.id] = dataclasses.replace(record, document=fixed)


def test_redrive_one_record_goes_past_its_aggregates_parking_and_deletes_it() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    bad = factories.order("o-1", status="teleported")
    runtime.relay("relay_orders").process([bad, factories.shipped("o-1", "e-2")])
    [blocked] = [
        r for r in quarantine.list() if r.reason is QuarantineReason.BLOCKED_BEHIND_QUARANTINED
    ]

    result = redrive(blocked, runtime, quarantine)

    assert result.resolved
    assert result.published == 1
    assert [m.message_id for m in publisher.delivered["integration-events"]] == [
        factories.outbox_id("o-1", "e-2")
    ]
    assert [r.reason for r in quarantine.list()] == [QuarantineReason.INVALID_DOCUMENT]


def test_redrive_still_invalid_document_stays_quarantined_under_the_same_id() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    runtime.relay("relay_orders").process([factories.order("o-1", status="teleported")])
    [record] = quarantine.list()

    result = redrive(record, runtime, quarantine)

    assert not result.resolved
    assert [r.id for r in quarantine.list()] == [record.id]
    assert publisher.sends == 0


def test_redrive_command_all_stops_each_aggregate_at_its_first_still_quarantined(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    runtime.relay("relay_orders").process(
        [factories.order("o-1", status="teleported"), factories.shipped("o-1", "e-2")]
    )

    code = run_redrive(quarantine, runtime)

    out = capsys.readouterr().out
    assert code == 1
    assert "[1/2]" in out
    assert "[2/2]" in out
    assert "not tried: parked behind" in out
    assert "aggregate=o-1 feed=relay_orders still parked" in out
    assert out.strip().endswith(
        "re-driven=0 still-quarantined=2 aggregates-released=0 still-parked=1"
    )
    assert publisher.sends == 0
    assert len(quarantine.list()) == 2


def test_redrive_command_all_fixed_publishes_in_change_order_and_releases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay("relay_orders")
    relay.process([factories.order("o-1", status="teleported"), factories.shipped("o-1", "e-2")])
    relay.process([factories.order("o-2", status="teleported")])
    for record in quarantine.list():
        if record.reason is QuarantineReason.INVALID_DOCUMENT:
            _fix(quarantine, record)

    code = run_redrive(quarantine, runtime)

    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().endswith(
        "re-driven=3 still-quarantined=0 aggregates-released=2 still-parked=0"
    )
    assert [(m.session_id, m.subject) for m in publisher.delivered["integration-events"]] == [
        ("o-1", "OrderUpserted"),
        ("o-1", "OrderShipped"),
        ("o-2", "OrderUpserted"),
    ]
    assert quarantine.list() == []
    assert quarantine.parks == {}


def test_redrive_command_ids_redrive_their_aggregates_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay("relay_orders")
    relay.process([factories.order("o-1", status="teleported"), factories.shipped("o-1", "e-2")])
    relay.process([factories.order("o-2", status="teleported")])
    for record in quarantine.list():
        if record.reason is QuarantineReason.INVALID_DOCUMENT:
            _fix(quarantine, record)
    [blocked] = [r for r in quarantine.list() if r.document_id == "e-2"]

    code = run_redrive(quarantine, runtime, ids=[blocked.id])

    assert code == 0, capsys.readouterr().out
    assert [m.session_id for m in publisher.delivered["integration-events"]] == ["o-1", "o-1"]
    assert [r.partition_key for r in quarantine.list()] == ["o-2"]
    assert set(quarantine.parks) == {("relay_orders", "o-2")}


def test_redrive_command_unknown_id_exits_2_and_redrives_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    runtime.relay("relay_orders").process([factories.order("o-1", status="teleported")])

    assert run_redrive(quarantine, runtime, ids=["nope"]) == 2
    assert publisher.sends == 0
    assert "not found" in capsys.readouterr().err
    assert len(quarantine.list()) == 1


def test_redrive_record_without_partition_key_is_redriven_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    keyless = factories.placed("o-1", "e-1")
    del keyless["partitionKey"]
    runtime.relay("relay_orders").process([keyless])

    code = run_redrive(quarantine, runtime)

    out = capsys.readouterr().out
    assert code == 1
    assert "(no partition key) still quarantined" in out
    assert quarantine.parks == {}


def test_quarantine_list_command_names_ids_and_reasons_never_bodies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    secret = factories.order("o-1", status="teleported", customerEmail="secret@example.com")
    runtime.relay("relay_orders").process([secret])

    assert run_list(quarantine.list(), runtime) == 0

    out = capsys.readouterr().out
    assert "reason=invalid-document" in out
    assert "document=o-1" in out
    assert "secret@example.com" not in out


def test_redrive_command_aggregate_with_nothing_parked_says_so_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()

    code = run_redrive(quarantine, runtime, aggregate="o-404")

    out = capsys.readouterr().out
    assert code == 0
    assert "nothing quarantined or parked there" in out
    assert "aggregate=" not in out


def test_redrive_command_aggregate_releases_a_marker_left_without_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    quarantine.park("relay_orders", "o-1", factories.FIXED_TIME, 100)  # records already re-driven

    code = run_redrive(quarantine, runtime, aggregate="o-1")

    assert code == 0
    assert "aggregate=o-1 feed=relay_orders released" in capsys.readouterr().out
    runtime.relay("relay_orders").process([factories.shipped("o-1", "e-2")])
    assert [m.session_id for m in publisher.delivered["integration-events"]] == ["o-1"]


def test_quarantine_list_command_shows_the_parked_aggregates_after_the_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    bad = factories.order("o-1", status="teleported")
    runtime.relay("relay_orders").process([bad])

    assert run_list(quarantine.list(), runtime, quarantine.parked_aggregates()) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[-3] == "1 quarantined record(s)"
    assert lines[-2].startswith(f"parked aggregate=o-1 feed=relay_orders from_lsn={bad['_lsn']} ")
    assert lines[-1] == "1 parked aggregate(s)"
