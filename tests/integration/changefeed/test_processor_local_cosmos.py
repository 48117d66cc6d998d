"""The change-feed processor against the local Cosmos DB server with the real SDK."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey

from devstack.cosmos import LocalCosmos
from events.adapters.cosmos.changefeed import CosmosChangeFeed, CosmosLeaseStore
from events.changefeed import Backoff, ChangeFeedProcessor, estimate_lag
from events.errors import PublishUnavailableError

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("processor_script.py")
REPO = Path(__file__).resolve().parents[3]


def _containers(database: DatabaseProxy) -> tuple[ContainerProxy, ContainerProxy]:
    monitored = database.create_container(id="orders", partition_key=PartitionKey(path="/pk"))
    leases = database.create_container(id="leases", partition_key=PartitionKey(path="/id"))
    return monitored, leases


def _write(container: ContainerProxy, ids: list[str]) -> None:
    for doc_id in ids:
        container.upsert_item({"id": doc_id, "pk": f"pk-{doc_id[-1]}"})


def _processor(
    monitored: ContainerProxy,
    leases: ContainerProxy,
    handler: Callable[[list[dict[str, Any]]], object],
    instance_id: str,
    **options: Any,
) -> ChangeFeedProcessor:
    settings: dict[str, Any] = {
        "name": "it.",
        "instance_id": instance_id,
        "max_items": 4,
        "lease_duration": 2.0,
        "renew_interval": 0.5,
        "acquire_interval": 0.5,
        "poll_interval": 0.05,
    }
    settings.update(options)
    return ChangeFeedProcessor(
        CosmosChangeFeed(monitored), CosmosLeaseStore(leases), handler, **settings
    )


def _drain(processors: list[ChangeFeedProcessor], steps: int = 50) -> None:
    for _ in range(steps):
        if sum(p.run_once() for p in processors) == 0:
            return


def test_processor_restart_resumes_from_checkpoint_without_loss_or_repeat(
    cosmos_database: DatabaseProxy,
) -> None:
    monitored, leases = _containers(cosmos_database)
    first_ids = [f"a{i}" for i in range(10)]
    _write(monitored, first_ids)
    seen: list[str] = []

    def handler(documents: list[dict[str, Any]]) -> None:
        seen.extend(d["id"] for d in documents)

    first = _processor(monitored, leases, handler, "host-1")
    first.run_once()
    first.run_once()  # two pages of 4, then the process "restarts"
    second_ids = [f"b{i}" for i in range(5)]
    _write(monitored, second_ids)
    restarted = _processor(monitored, leases, handler, "host-1")

    _drain([restarted])

    assert Counter(seen) == Counter(first_ids + second_ids)
    assert estimate_lag(CosmosChangeFeed(monitored), CosmosLeaseStore(leases), "it.") == {
        "it.00-FF": 0
    }


def test_processor_two_instances_share_leases_each_change_once(
    cosmos_database: DatabaseProxy,
) -> None:
    monitored, leases = _containers(cosmos_database)
    ids = [f"d{i}" for i in range(12)]
    _write(monitored, ids)
    seen: list[str] = []

    def handler(documents: list[dict[str, Any]]) -> None:
        seen.extend(d["id"] for d in documents)

    a = _processor(monitored, leases, handler, "a")
    b = _processor(monitored, leases, handler, "b")

    _drain([a, b])

    # The local server has one feed range: exactly one instance owns its lease.
    assert sorted([*a.owned_leases, *b.owned_leases]) == ["it.00-FF"]
    assert Counter(seen) == Counter(ids)


def test_processor_handler_failure_leaves_checkpoint_where_it_was(
    cosmos_database: DatabaseProxy,
) -> None:
    monitored, leases = _containers(cosmos_database)
    _write(monitored, ["x1", "x2"])
    store = CosmosLeaseStore(leases)
    ok: list[str] = []
    _processor(monitored, leases, lambda docs: ok.extend(d["id"] for d in docs), "a").run_once()
    checkpoint = store.get("it.00-FF").continuation  # type: ignore[union-attr]
    _write(monitored, ["x3"])
    attempts: list[float] = []

    def failing(documents: list[dict[str, Any]]) -> None:
        raise PublishUnavailableError("down")

    broken = _processor(monitored, leases, failing, "a", backoff=Backoff(initial=0.01))

    def sleep(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) == 3:
            broken.stop()

    broken._sleep = sleep
    broken.run_once()
    broken.release_all()
    after_failure = store.get("it.00-FF")
    retried: list[str] = []
    _drain([_processor(monitored, leases, lambda d: retried.extend(x["id"] for x in d), "b")])

    assert ok == ["x1", "x2"]
    assert attempts == [0.01, 0.02, 0.04]
    assert after_failure is not None
    assert after_failure.continuation == checkpoint
    assert retried == ["x3"]


def test_processor_killed_instance_lease_taken_over_after_expiry(
    cosmos_database: DatabaseProxy, local_cosmos: LocalCosmos, tmp_path: Path
) -> None:
    monitored, leases = _containers(cosmos_database)
    ids = [f"k{i:03d}" for i in range(60)]
    _write(monitored, ids)
    out_file = tmp_path / "killed.txt"
    child = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            local_cosmos.endpoint,
            local_cosmos.key,
            cosmos_database.id,
            "orders",
            "leases",
            "victim",
            str(out_file),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and child.poll() is None
            and (not out_file.exists() or len(out_file.read_text().split()) < 10)
        ):
            time.sleep(0.1)
        child.kill()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    killed_seen = out_file.read_text().split() if out_file.exists() else []
    assert len(killed_seen) >= 10, "the child processed nothing in time"
    survivor_seen: list[str] = []
    survivor = _processor(
        monitored,
        leases,
        lambda docs: survivor_seen.extend(d["id"] for d in docs),
        "survivor",
        name="takeover.",
        max_items=5,
    )

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(killed_seen) | set(survivor_seen) != set(ids):
        if survivor.run_once() == 0:
            time.sleep(0.1)

    assert survivor.owned_leases == ["takeover.00-FF"]
    assert set(killed_seen) | set(survivor_seen) == set(ids)
    assert len(killed_seen) < len(ids)
    # Only the batch in flight when the child died (at most max_items) is handled twice.
    assert len(set(killed_seen) & set(survivor_seen)) <= 5
    assert Counter(survivor_seen).most_common(1)[0][1] == 1


def test_cosmos_feed_page_after_page_same_as_fresh_reads_and_rereads_a_position(
    cosmos_database: DatabaseProxy,
) -> None:
    monitored, _ = _containers(cosmos_database)
    _write(monitored, [f"d{i:02d}" for i in range(10)])
    resumed_feed, fresh_feed = CosmosChangeFeed(monitored), CosmosChangeFeed(monitored)
    [feed_range] = resumed_feed.feed_ranges()

    def pages(feed: CosmosChangeFeed, fresh: bool) -> list[tuple[list[str], str]]:
        read: list[tuple[list[str], str]] = []
        position: Any = "beginning"
        while True:
            if fresh:
                feed = CosmosChangeFeed(monitored)  # nothing kept from the read before
            page = feed.read_page(feed_range, position, 4)
            read.append(([d["id"] for d in page.items], page.continuation))
            if not page.items:
                return read
            position = page.continuation

    resumed, fresh = pages(resumed_feed, fresh=False), pages(fresh_feed, fresh=True)
    first = resumed_feed.read_page(feed_range, "beginning", 4)
    again = resumed_feed.read_page(feed_range, "beginning", 4)  # a retry of the same position

    assert [ids for ids, _ in resumed] == [ids for ids, _ in fresh]
    assert [ids for ids, _ in resumed][:3] == [
        ["d00", "d01", "d02", "d03"],
        ["d04", "d05", "d06", "d07"],
        ["d08", "d09"],
    ]
    assert [d["id"] for d in again.items] == [d["id"] for d in first.items]
    monitored.upsert_item({"id": "d10", "pk": "pk-0"})
    after_last = resumed_feed.read_page(feed_range, resumed[-1][1], 4)
    assert [d["id"] for d in after_last.items] == ["d10"]


def test_processor_two_instances_split_four_feed_ranges_and_each_change_is_handled_once(
    partitioned_cosmos_client: CosmosClient,
) -> None:
    database = partitioned_cosmos_client.create_database(id=f"ranges-{uuid.uuid4().hex[:8]}")
    try:
        monitored, leases = _containers(database)
        assert len(list(monitored.read_feed_ranges())) == 4
        seen: list[str] = []

        def handler(documents: list[dict[str, Any]]) -> None:
            seen.extend(d["id"] for d in documents)

        a = _processor(monitored, leases, handler, "a")
        b = _processor(monitored, leases, handler, "b")
        give_up = time.monotonic() + 60  # a bound: balancing runs every acquire interval
        while time.monotonic() < give_up and [len(a.owned_leases), len(b.owned_leases)] != [2, 2]:
            a.run_once()
            b.run_once()
            time.sleep(0.1)
        # Written once the leases are shared out: a lease taken from a busy instance would
        # have its in-flight page handled twice (at-least-once), which is not under test here.
        ids = [f"r{i:03d}" for i in range(80)]
        for doc_id in ids:  # spread over many partition key values, hence every range
            monitored.upsert_item({"id": doc_id, "pk": f"pk-{doc_id}"})
        _drain([a, b])

        assert (len(a.owned_leases), len(b.owned_leases)) == (2, 2)
        assert len(set(a.owned_leases) | set(b.owned_leases)) == 4
        assert Counter(seen) == Counter(ids)
    finally:
        partitioned_cosmos_client.delete_database(database)
