"""A relay paused past its lease in the middle of a batch: its successor publishes the newer
state of an aggregate meanwhile, and the paused relay, resuming, must not publish the older
state after it (the processor's fence, checked by the publisher before each send).

The feed keeps each document's latest version only, as Cosmos DB's change feed does: the
successor never sees the older state, so without the fence that older state would reach the
broker after the newer one, with its own event id that duplicate detection cannot drop."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from events.changefeed import ChangeFeedProcessor, InMemoryChangeFeed, InMemoryLeaseStore
from events.core.messages import CLOUDEVENTS_PREFIX, OutgoingMessage, Router
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.core.relay import Relay
from tests import factories
from tests.clock import ManualClock

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BOUND = 30.0  # seconds any wait in this test may take at most
LEASE_SECONDS = 10.0


class PausedAfterFirstSend(InMemoryPublisher):
    """A broker whose first send, once delivered, stops its caller until ``resume``: the
    relay's process was stopped right after it (SIGSTOP, a VM pause)."""

    def __init__(self) -> None:
        super().__init__(["integration-events", "payments"])
        self.paused = threading.Event()
        self.resume = threading.Event()

    def _deliver(self, destination: str, batch: list[OutgoingMessage]) -> None:
        super()._deliver(destination, batch)
        if not self.paused.is_set():
            self.paused.set()
            assert self.resume.wait(BOUND), "the test never resumed the paused relay"


def _processor(
    feed: InMemoryChangeFeed,
    leases: InMemoryLeaseStore,
    publisher: InMemoryPublisher,
    clock: ManualClock,
    instance_id: str,
) -> ChangeFeedProcessor:
    config = factories.settings()
    relay = Relay(
        factories.feed(),
        publisher,
        InMemoryQuarantine(),
        Router(default=config.default_destination, routes=config.routes),
        clock=clock,
        chunk_documents=1,  # one send per document
    )
    return ChangeFeedProcessor(
        feed,
        leases,
        relay.process,
        name="relay-orders.",
        instance_id=instance_id,
        lease_duration=LEASE_SECONDS,
        renew_interval=1.0,
        acquire_interval=1.0,
        clock=clock,
    )


def _sequences(publisher: InMemoryPublisher, order_id: str) -> list[int]:
    """The ``sequence`` of every event of the order on the broker, in arrival order."""
    return [
        int(str(m.application_properties[f"{CLOUDEVENTS_PREFIX}sequence"]))
        for m in publisher.delivered["integration-events"]
        if m.session_id == order_id
    ]


def test_relay_paused_past_its_lease_mid_batch_never_sends_an_older_state_after_a_newer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, feed, leases = ManualClock(T0), InMemoryChangeFeed(), InMemoryLeaseStore()
    publisher = PausedAfterFirstSend()
    old = _processor(feed, leases, publisher, clock, "old")
    successor = _processor(feed, leases, publisher, clock, "successor")
    old.run_once()  # takes the lease; nothing to read yet
    feed.write(factories.order("o-1", status="placed"), partition_key="o-1")
    feed.write(factories.order("o-2", status="placed"), partition_key="o-2")
    caplog.set_level(logging.WARNING, logger="events.changefeed")

    resumed = threading.Thread(target=old.run_once, name="old-relay", daemon=True)
    resumed.start()
    assert publisher.paused.wait(BOUND), "the old relay never sent"
    # Stopped longer than its lease: the successor takes the feed over, and o-2 changes.
    clock.advance(LEASE_SECONDS + 1)
    newer = feed.write(factories.order("o-2", status="shipped"), partition_key="o-2")
    for _ in range(3):
        successor.run_once()
    assert _sequences(publisher, "o-2") == [newer]
    publisher.resume.set()  # the old relay resumes in the middle of its batch
    resumed.join(BOUND)
    assert not resumed.is_alive()
    for _ in range(2):
        successor.run_once()

    assert _sequences(publisher, "o-2") == [newer]  # the older state was never sent
    assert old.owned_leases == []
    assert successor.owned_leases != []
    assert any("handler fenced out" in r.getMessage() for r in caplog.records)
    assert {m.session_id for m in publisher.delivered["integration-events"]} == {"o-1", "o-2"}
