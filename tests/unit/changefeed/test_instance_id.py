"""The default instance id of ``python -m events run``, and a restart with the same id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.changefeed import ChangeFeedProcessor, InMemoryChangeFeed, InMemoryLeaseStore
from events.errors import SettingsError
from events.hosts.processor import MAX_SLOTS, claim_instance_id
from tests.clock import ManualClock

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE_DURATION = 60.0


class Recorder:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, documents: list[dict[str, Any]]) -> None:
        self.ids.extend(str(d["id"]) for d in documents)


def _processor(
    feed: InMemoryChangeFeed,
    store: InMemoryLeaseStore,
    handler: Recorder,
    clock: ManualClock,
    who: str,
) -> ChangeFeedProcessor:
    return ChangeFeedProcessor(
        feed,
        store,
        handler,
        name="relay-orders.",
        instance_id=who,
        lease_duration=LEASE_DURATION,
        renew_interval=17.0,
        acquire_interval=13.0,
        clock=clock,
        sleep=lambda _: None,
    )


def _write(feed: InMemoryChangeFeed, *ids: str) -> None:
    for doc_id in ids:
        feed.write({"id": doc_id, "pk": doc_id}, partition_key=doc_id)


def test_claim_instance_id_same_host_twice_gets_distinct_slots(tmp_path: Path) -> None:
    first = claim_instance_id(host="relay-vm", lock_dir=tmp_path)
    second = claim_instance_id(host="relay-vm", lock_dir=tmp_path)

    assert (first.instance_id, second.instance_id) == ("relay-vm-1", "relay-vm-2")


def test_claim_instance_id_after_close_same_id_again(tmp_path: Path) -> None:
    first = claim_instance_id(host="relay-vm", lock_dir=tmp_path)
    first.close()  # what the OS does when the process dies, even on SIGKILL

    again = claim_instance_id(host="relay-vm", lock_dir=tmp_path)

    assert again.instance_id == "relay-vm-1"


def test_claim_instance_id_requested_id_used_as_is(tmp_path: Path) -> None:
    assert claim_instance_id("blue", host="relay-vm", lock_dir=tmp_path).instance_id == "blue"


def test_claim_instance_id_every_slot_taken_settings_error(tmp_path: Path) -> None:
    held = [claim_instance_id(host="h", lock_dir=tmp_path) for _ in range(MAX_SLOTS)]

    with pytest.raises(SettingsError, match="--instance-id"):
        claim_instance_id(host="h", lock_dir=tmp_path)
    assert len({claim.instance_id for claim in held}) == MAX_SLOTS


def test_claim_instance_id_odd_host_name_safe_lease_owner(tmp_path: Path) -> None:
    claim = claim_instance_id(host="my host/1", lock_dir=tmp_path)

    assert claim.instance_id == "my-host-1-1"


def test_processor_restarted_with_same_id_reclaims_its_leases_before_expiry() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(ranges=2), InMemoryLeaseStore()
    _write(feed, "d1", "d2")
    before, after = Recorder(), Recorder()
    crashed = _processor(feed, store, before, clock, "relay-vm-1")
    crashed.run_once()
    owned = crashed.owned_leases
    _write(feed, "d3")
    clock.advance(1)  # killed: no release, its leases stay owned for another 59 s

    restarted = _processor(feed, store, after, clock, "relay-vm-1")
    restarted.run_once()

    assert len(owned) == 2
    assert restarted.owned_leases == owned
    assert after.ids == ["d3"]
    assert sorted(before.ids) == ["d1", "d2"]
    for lease_id in owned:
        lease = store.get(lease_id)
        assert lease is not None
        assert lease.owner == "relay-vm-1"
        assert lease.timestamp < T0 + timedelta(seconds=LEASE_DURATION)


def test_processor_other_id_while_leases_unexpired_waits_for_expiry() -> None:
    clock, feed, store = ManualClock(T0), InMemoryChangeFeed(ranges=1), InMemoryLeaseStore()
    _write(feed, "d1")
    crashed = _processor(feed, store, Recorder(), clock, "relay-vm-1")
    crashed.run_once()
    _write(feed, "d2")
    clock.advance(1)
    other_handler = Recorder()
    other = _processor(feed, store, other_handler, clock, "relay-vm-2")

    other.run_once()
    waited = (other.owned_leases, list(other_handler.ids))
    clock.advance(LEASE_DURATION + 13)
    other.run_once()

    assert waited == ([], [])
    assert other.owned_leases == crashed.owned_leases
    assert other_handler.ids == ["d2"]
