"""Quarantine records expire with the container's TTL; the notice rule says which are due."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from events.core.quarantine import ExpiryNotice, InMemoryQuarantine, QuarantineRecord
from events.hosts.redrive import EXPIRY_NOTICE, expiry_notice, warn_expiring
from tests import factories

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NOTICE = ExpiryNotice(ttl=timedelta(days=30), notice=timedelta(days=7))


def _records(*ages_in_days: float) -> list[QuarantineRecord]:
    runtime, _, quarantine = factories.in_memory_runtime()
    documents = [factories.order(f"o-{n}", status="teleported") for n in range(len(ages_in_days))]
    for document in documents:
        runtime.relay("relay_orders").process([document])
    records = sorted(quarantine.records.values(), key=lambda r: r.document_id)
    return [
        replace(r, quarantined_at=NOW - timedelta(days=age))
        for r, age in zip(records, ages_in_days, strict=True)
    ]


def test_expiry_notice_due_are_the_records_within_the_notice_soonest_first() -> None:
    fresh, due_later, due_soon, overdue = _records(1, 23.5, 29, 31)

    due = NOTICE.due([fresh, due_later, due_soon, overdue], NOW)

    assert [r.document_id for r in due] == [
        overdue.document_id,
        due_soon.document_id,
        due_later.document_id,
    ]
    assert NOTICE.expires_at(fresh) == NOW + timedelta(days=29)


def test_expiry_notice_from_the_declaration_uses_the_quarantine_ttl() -> None:
    notice = expiry_notice(factories.DEPLOYMENT.topology)

    assert notice is not None
    ttl = factories.DEPLOYMENT.topology.cosmos.one("quarantine").default_ttl
    assert notice.ttl == timedelta(seconds=ttl)
    assert notice.notice == EXPIRY_NOTICE


def test_expiry_notice_none_when_records_never_expire() -> None:
    topology = factories.DEPLOYMENT.topology
    containers = tuple(
        c.model_copy(update={"default_ttl": -1}) if c.role == "quarantine" else c
        for c in topology.cosmos.containers
    )
    forever = topology.model_copy(
        update={"cosmos": topology.cosmos.model_copy(update={"containers": containers})}
    )

    assert expiry_notice(forever) is None


def test_warn_expiring_logs_one_warning_per_due_record_with_its_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = InMemoryQuarantine()
    for record in _records(2, 25):
        admin.put(record)
    caplog.set_level(logging.WARNING, logger="events.hosts")

    count = warn_expiring(admin, NOTICE, NOW)

    [line] = [r.getMessage() for r in caplog.records if r.name == "events.hosts.redrive"]
    assert count == 1
    assert "quarantine record expires soon" in line
    assert "document_id=o-1" in line
    assert "expires_at=2026-06-06" in line
