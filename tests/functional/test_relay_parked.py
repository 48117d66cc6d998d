"""An aggregate with a quarantined change stays parked across batches: its later changes are
quarantined behind it, in any later batch, through either host, until a re-drive releases it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

import azure.functions as func
import pytest

from events.changefeed import ChangeFeedProcessor, InMemoryChangeFeed, InMemoryLeaseStore
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine, QuarantineReason
from events.errors import PublishUnavailableError, StoreUnavailableError
from events.hosts.functions import blueprint
from events.hosts.redrive import redrive_aggregate
from events.hosts.runtime import Runtime
from tests import factories

FEED = "relay_orders"
BLOCKED = QuarantineReason.BLOCKED_BEHIND_QUARANTINED


def _ids(publisher: InMemoryPublisher, session: str | None = None) -> list[str]:
    delivered = publisher.delivered["integration-events"]
    return [m.message_id for m in delivered if session is None or m.session_id == session]


def _reasons(quarantine: InMemoryQuarantine) -> dict[str, QuarantineReason]:
    return {r.document_id: r.reason for r in quarantine.records.values()}


def _fix_invalid(quarantine: InMemoryQuarantine) -> None:
    """What a fix of the mapping amounts to here: the stored invalid documents now map."""
    for record in list(quarantine.records.values()):
        if record.reason is QuarantineReason.INVALID_DOCUMENT and record.document is not None:
            fixed = {**record.document, "status": "placed"}
            quarantine.records[record.id] = dataclasses.replace(record, document=fixed)


def test_relay_valid_change_in_a_later_batch_of_a_quarantined_aggregate_is_parked() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)

    relay.process([factories.order("o-1", status="teleported")])
    outcome = relay.process([factories.shipped("o-1", "e-2"), factories.placed("o-2", "e-3")])

    assert _ids(publisher) == [factories.outbox_id("o-2", "e-3")]
    assert _reasons(quarantine) == {"o-1": QuarantineReason.INVALID_DOCUMENT, "e-2": BLOCKED}
    assert (outcome.published, outcome.quarantined) == (1, 1)


def test_relay_parked_aggregate_stays_parked_batch_after_batch() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)
    relay.process([factories.order("o-1", status="teleported")])

    for n in range(2, 6):
        relay.process([factories.shipped("o-1", f"e-{n}")])

    assert _ids(publisher) == []
    assert sorted(_reasons(quarantine).values()) == sorted(
        [QuarantineReason.INVALID_DOCUMENT, *[BLOCKED] * 4]
    )


def test_relay_parked_change_that_fails_on_its_own_keeps_its_own_reason() -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)
    relay.process([factories.order("o-1", status="teleported")])
    bad_time = factories.shipped("o-1", "e-2")
    bad_time["time"] = "not a time"

    relay.process([bad_time])

    assert _reasons(quarantine)["e-2"] is QuarantineReason.INVALID_DOCUMENT


def test_relay_checks_parked_aggregates_with_one_store_request_per_batch() -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)
    batch = [factories.placed(f"o-{n % 7}", f"e-{n}") for n in range(50)]

    relay.process(batch)
    relay.process([factories.order("o-1", status="teleported"), factories.placed("o-2", "x")])

    assert quarantine.parked_queries == 2


def test_relay_batch_without_any_partition_key_asks_the_store_nothing() -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    keyless = factories.placed("o-1", "e-1")
    del keyless["partitionKey"]

    runtime.relay(FEED).process([keyless])

    assert quarantine.parked_queries == 0
    assert quarantine.parks == {}  # a change without an aggregate parks none


def test_relay_retry_of_a_batch_whose_publish_failed_publishes_what_it_would_have() -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    runtime, _, quarantine = factories.in_memory_runtime(publisher)
    relay = runtime.relay(FEED)
    batch = [
        factories.placed("o-1", "e-1"),  # before the bad change: published
        factories.order("o-1", status="teleported"),
        factories.shipped("o-1", "e-2"),
    ]
    publisher.fail_on_send(1)

    with pytest.raises(PublishUnavailableError):
        relay.process(batch)
    assert quarantine.parks == {}  # nothing parked by a batch that did not finish
    relay.process(batch)  # the host redelivers the same batch

    assert _ids(publisher) == [factories.outbox_id("o-1", "e-1")]
    assert _reasons(quarantine) == {"o-1": QuarantineReason.INVALID_DOCUMENT, "e-2": BLOCKED}
    assert set(quarantine.parks) == {(FEED, "o-1")}


def test_relay_finished_batch_delivered_again_changes_nothing_published_or_quarantined() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)
    batch = [
        factories.placed("o-1", "e-1"),  # before the bad change: published, and again
        factories.order("o-1", status="teleported"),
        factories.shipped("o-1", "e-2"),
    ]
    relay.process(batch)
    first = (list(_ids(publisher)), _reasons(quarantine))

    relay.process(batch)  # its checkpoint was not written: the host delivers it again

    assert (_ids(publisher), _reasons(quarantine)) == first
    assert publisher.duplicates == 1  # e-1 sent again, dropped by duplicate detection
    marker = quarantine.parked_aggregate(FEED, "o-1")
    assert marker is not None
    assert marker.from_lsn == batch[1]["_lsn"]


def test_relay_parked_without_a_known_first_lsn_holds_every_change_back() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    quarantine.park(FEED, "o-1", factories.FIXED_TIME, None)

    runtime.relay(FEED).process([factories.placed("o-1", "e-1")])

    assert _ids(publisher) == []
    assert _reasons(quarantine) == {"e-1": BLOCKED}


def test_relay_same_change_quarantined_twice_is_one_record_and_one_park() -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    relay = runtime.relay(FEED)
    bad = factories.order("o-1", status="teleported")

    relay.process([bad])
    relay.process([bad])  # a redelivered batch

    assert _reasons(quarantine) == {"o-1": QuarantineReason.INVALID_DOCUMENT}
    assert set(quarantine.parks) == {(FEED, "o-1")}


def test_relay_parks_are_per_feed() -> None:
    runtime, publisher, _ = factories.in_memory_runtime()
    runtime.relay(FEED).process([factories.order("same-key", status="teleported")])

    runtime.relay("relay_eventstore").process([factories.stream_event("same-key", 1)])

    assert len(_ids(publisher, "same-key")) == 1


class FailingCheck(InMemoryQuarantine):
    def parked(self, feed: str, partition_keys: Collection[str]) -> dict[str, int | None]:
        raise ConnectionResetError("driver bug")


class FailingPark(InMemoryQuarantine):
    def park(self, feed: str, partition_key: str, at: datetime, from_lsn: int | None) -> None:
        raise StoreUnavailableError("quarantine park: Cosmos DB answered 503")


def test_relay_parked_check_failing_raises_transient_before_anything_is_written() -> None:
    quarantine = FailingCheck()
    runtime, publisher, _ = factories.in_memory_runtime(quarantine=quarantine)

    with pytest.raises(StoreUnavailableError, match="ConnectionResetError"):
        runtime.relay(FEED).process([factories.order("o-1", status="teleported")])
    assert (publisher.sends, quarantine.records) == (0, {})


def test_relay_park_failing_raises_transient_and_the_retry_parks() -> None:
    quarantine = FailingPark()
    runtime, publisher, _ = factories.in_memory_runtime(quarantine=quarantine)
    batch = [factories.order("o-1", status="teleported"), factories.placed("o-2", "e-2")]

    with pytest.raises(StoreUnavailableError):
        runtime.relay(FEED).process(batch)

    healthy = InMemoryQuarantine()
    healthy.records.update(quarantine.records)
    retry, _, _ = factories.in_memory_runtime(publisher, healthy)
    retry.relay(FEED).process(batch)
    assert set(healthy.parks) == {(FEED, "o-1")}
    assert _ids(publisher) == [factories.outbox_id("o-2", "e-2")]  # the resend was a duplicate


def _function(runtime: Runtime) -> Any:
    app = func.FunctionApp()
    app.register_functions(blueprint(lambda: runtime))
    [fn] = [f for f in app.get_functions() if f.get_function_name() == FEED]
    return fn.get_user_function()


def test_functions_trigger_parks_a_later_batch_and_redrive_publishes_in_change_order() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    relay_orders = _function(runtime)
    bad = factories.order("o-1", status="teleported")
    later = factories.shipped("o-1", "e-2")

    relay_orders(func.DocumentList([func.Document.from_dict(bad)]))
    relay_orders(func.DocumentList([func.Document.from_dict(later)]))

    assert _ids(publisher, "o-1") == []
    assert _reasons(quarantine)["e-2"] is BLOCKED
    _fix_invalid(quarantine)
    assert redrive_aggregate(FEED, "o-1", runtime, quarantine).released
    assert [m.subject for m in publisher.delivered["integration-events"]] == [
        "OrderUpserted",
        "OrderShipped",
    ]


def _run_until(processor: ChangeFeedProcessor, documents: int) -> int:
    """Steps (at most five: the processor reads one page ahead) until it handled that many."""
    handled = 0
    for _ in range(5):
        handled += processor.run_once()
        if handled >= documents:
            break
    return handled


def test_processor_host_parks_a_later_page_and_redrive_publishes_in_change_order() -> None:
    runtime, publisher, quarantine = factories.in_memory_runtime()
    feed = InMemoryChangeFeed()
    processor = ChangeFeedProcessor(
        feed,
        InMemoryLeaseStore(),
        runtime.relay(FEED).process,
        name="relay-orders.",
        instance_id="a",
        lease_duration=60.0,
        renew_interval=17.0,
        acquire_interval=13.0,
    )
    feed.write(factories.order("o-1", status="teleported"), partition_key="o-1")
    assert _run_until(processor, 1) == 1
    feed.write(factories.shipped("o-1", "e-2"), partition_key="o-1")
    feed.write(factories.placed("o-2", "e-3"), partition_key="o-2")

    assert _run_until(processor, 2) == 2

    assert _ids(publisher) == [factories.outbox_id("o-2", "e-3")]
    assert _reasons(quarantine)["e-2"] is BLOCKED
    _fix_invalid(quarantine)
    assert redrive_aggregate(FEED, "o-1", runtime, quarantine).released
    delivered = publisher.delivered["integration-events"]
    assert [m.subject for m in delivered if m.session_id == "o-1"] == [
        "OrderUpserted",
        "OrderShipped",
    ]
