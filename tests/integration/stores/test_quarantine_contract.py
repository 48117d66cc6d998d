"""Contract tests shared by the in-memory and the Cosmos DB quarantine store (the inbox
contract: test_inbox_contract.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import pytest
from azure.cosmos import DatabaseProxy, PartitionKey

from events.adapters.cosmos.stores import CosmosQuarantine
from events.core.quarantine import (
    InMemoryQuarantine,
    QuarantineAdmin,
    QuarantineReason,
    QuarantineRecord,
    QuarantineStore,
)

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

Reader = Callable[[str, str], dict[str, object] | None]


class AdminStore(QuarantineStore, QuarantineAdmin, Protocol):
    pass


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def quarantine(request: pytest.FixtureRequest) -> Iterator[tuple[AdminStore, Reader]]:
    if request.param == "memory":
        store = InMemoryQuarantine()

        def read_memory(record_id: str, partition_key: str) -> dict[str, object] | None:
            record = store.records.get(record_id)
            return None if record is None else record.to_document()

        yield store, read_memory
        return
    database: DatabaseProxy = request.getfixturevalue("cosmos_database")
    container = database.create_container(
        id="quarantine", partition_key=PartitionKey(path="/partitionKey")
    )

    def read_cosmos(record_id: str, partition_key: str) -> dict[str, object] | None:
        items = list(
            container.query_items(
                "SELECT * FROM c WHERE c.id = @id",
                parameters=[{"name": "@id", "value": record_id}],
                partition_key=partition_key,
            )
        )
        return items[0] if items else None

    yield CosmosQuarantine(container), read_cosmos


def _record(lsn: int = 7, error: str = "bad time") -> QuarantineRecord:
    return QuarantineRecord(
        feed="relay_orders",
        container="orders",
        document_id="order-1",
        partition_key="order-1",
        lsn=lsn,
        reason=QuarantineReason.INVALID_DOCUMENT,
        error=error,
        quarantined_at=NOW,
        document={"id": "order-1", "partitionKey": "order-1", "time": "bad"},
    )


def test_quarantine_put_stores_reason_error_and_document_to_redrive(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, read = quarantine

    store.put(_record())

    stored = read(_record().id, "order-1")
    assert stored is not None
    assert stored["reason"] == "invalid-document"
    assert stored["error"] == "bad time"
    assert stored["document"] == {"id": "order-1", "partitionKey": "order-1", "time": "bad"}
    assert (stored["container"], stored["documentId"], stored["lsn"]) == ("orders", "order-1", 7)


def test_quarantine_same_change_twice_is_one_record(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, read = quarantine

    store.put(_record(error="first"))
    store.put(_record(error="second"))

    stored = read(_record().id, "order-1")
    assert stored is not None
    assert stored["error"] == "second"
    assert _record(lsn=8).id != _record().id


def test_quarantine_list_returns_records_oldest_first_by_feed_and_delete_removes(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, read = quarantine
    older = _record(lsn=1)
    newer = QuarantineRecord(
        **{**older.__dict__, "lsn": 2, "quarantined_at": NOW.replace(hour=11), "feed": "other"}
    )
    store.put(newer)
    store.put(older)

    assert [r.lsn for r in store.list()] == [1, 2]
    assert [r.lsn for r in store.list(feed="other")] == [2]
    assert store.list()[0] == older
    assert [r.lsn for r in store.list(limit=1)] == [1]
    store.delete(older)
    store.delete(older)  # twice is harmless
    assert [r.lsn for r in store.list()] == [2]
    assert read(older.id, "order-1") is None


def test_quarantine_parked_answers_only_the_parked_aggregates_of_the_feed(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, _ = quarantine
    store.park("relay_orders", "order-1", NOW, 7)
    store.park("relay_orders", 'order 2/"odd"', NOW, 8)
    store.park("other", "order-3", NOW, 7)

    found = store.parked("relay_orders", {"order-1", 'order 2/"odd"', "order-3", "order-4"})

    assert found == {"order-1": 7, 'order 2/"odd"': 8}
    assert store.parked("relay_orders", set()) == {}


def test_quarantine_park_keeps_the_first_lsn_given_or_none(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, _ = quarantine
    store.park("relay_orders", "order-1", NOW, 100)
    store.park("relay_orders", "order-2", NOW, None)
    store.park("relay_orders", "order-1", NOW, 90)  # parked again, from an earlier change

    assert store.parked("relay_orders", {"order-1", "order-2"}) == {
        "order-1": 90,
        "order-2": None,
    }
    marker = store.parked_aggregate("relay_orders", "order-1")
    assert marker is not None
    assert marker.from_lsn == 90


def test_quarantine_parked_marker_is_not_a_record(quarantine: tuple[AdminStore, Reader]) -> None:
    store, _ = quarantine
    store.put(_record())
    store.park("relay_orders", "order-1", NOW, 7)

    assert [r.id for r in store.list()] == [_record().id]
    assert [r.id for r in store.records_of("relay_orders", "order-1")] == [_record().id]
    assert store.records_of("other", "order-1") == []
    assert store.records_of("relay_orders", "order-2") == []


def test_quarantine_park_twice_is_one_marker_with_a_new_version(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, _ = quarantine
    store.park("relay_orders", "order-1", NOW, 7)
    first = store.parked_aggregate("relay_orders", "order-1")
    store.park("relay_orders", "order-1", NOW.replace(hour=11), 7)

    second = store.parked_aggregate("relay_orders", "order-1")

    assert first is not None
    assert second is not None
    assert first.version != second.version
    assert (second.feed, second.partition_key, second.parked_at) == (
        "relay_orders",
        "order-1",
        NOW.replace(hour=11),
    )
    assert [p.partition_key for p in store.parked_aggregates()] == ["order-1"]
    assert store.parked_aggregate("relay_orders", "order-2") is None


def test_quarantine_release_of_a_stale_version_fails_and_keeps_the_aggregate_parked(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, _ = quarantine
    store.park("relay_orders", "order-1", NOW, 7)
    stale = store.parked_aggregate("relay_orders", "order-1")
    store.park("relay_orders", "order-1", NOW, 7)  # parked again while a re-drive ran
    assert stale is not None

    assert store.release(stale) is False
    assert store.parked("relay_orders", {"order-1"}) == {"order-1": 7}
    current = store.parked_aggregate("relay_orders", "order-1")
    assert current is not None
    assert store.release(current) is True
    assert store.parked("relay_orders", {"order-1"}) == {}
    assert store.release(current) is True  # already released: harmless


def test_quarantine_parked_aggregates_lists_by_feed_longest_parked_first(
    quarantine: tuple[AdminStore, Reader],
) -> None:
    store, _ = quarantine
    store.park("relay_orders", "order-2", NOW.replace(hour=12), 7)
    store.park("relay_orders", "order-1", NOW, 7)
    store.park("other", "order-3", NOW.replace(hour=11), 7)

    assert [p.partition_key for p in store.parked_aggregates()] == [
        "order-1",
        "order-3",
        "order-2",
    ]
    assert [p.partition_key for p in store.parked_aggregates(feed="other")] == ["order-3"]
    assert [p.partition_key for p in store.parked_aggregates(limit=1)] == ["order-1"]
