"""Re-driving quarantined documents through the relay they came from."""

from __future__ import annotations

import pytest

from events.core.quarantine import QuarantineReason
from events.hosts.redrive import redrive, run
from tests import factories


def test_redrive_blocked_change_publishes_it_and_deletes_the_record() -> None:
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


def test_redrive_command_reports_progress_and_fails_when_something_stays(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    runtime.relay("relay_orders").process(
        [factories.order("o-1", status="teleported"), factories.shipped("o-1", "e-2")]
    )

    code = run("redrive", quarantine.list(), runtime, quarantine)

    out = capsys.readouterr().out
    assert code == 1
    assert "[1/2]" in out
    assert "[2/2]" in out
    assert out.strip().endswith("re-driven=1 still-quarantined=1")


def test_quarantine_list_command_names_ids_and_reasons_never_bodies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    secret = factories.order("o-1", status="teleported", customerEmail="secret@example.com")
    runtime.relay("relay_orders").process([secret])

    assert run("list", quarantine.list(), runtime, quarantine) == 0

    out = capsys.readouterr().out
    assert "reason=invalid-document" in out
    assert "document=o-1" in out
    assert "secret@example.com" not in out
