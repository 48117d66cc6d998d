"""The local Cosmos DB server (devstack.cosmos) driven by the real azure-cosmos SDK."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.cosmos import ContainerProxy, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from devstack.cosmos import DevStackError, LocalCosmos
from tests.commands import first_line_then_sigterm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
WAIT_SECONDS = 10.0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Poll `condition` until it holds or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def new_container(database: DatabaseProxy, **options: Any) -> ContainerProxy:
    created: ContainerProxy = database.create_container(
        id=f"c-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/pk"), **options
    )
    return created


@pytest.fixture
def container(cosmos_database: DatabaseProxy) -> ContainerProxy:
    return new_container(cosmos_database)


def ids(items: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def drain(container: ContainerProxy, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
    """All change-feed items for these arguments, and the continuation after them."""
    items = list(container.query_items_change_feed(**kwargs))
    return items, container.client_connection.last_response_headers["etag"]


def exists(container: ContainerProxy, item_id: str, pk: str) -> bool:
    try:
        container.read_item(item_id, partition_key=pk)
    except CosmosResourceNotFoundError:
        return False
    return True


# --- documents ---------------------------------------------------------------------------


def test_item_create_read_replace_delete_roundtrips(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p", "n": 1})
    assert container.read_item("a", partition_key="p")["n"] == 1
    container.replace_item("a", {"id": "a", "pk": "p", "n": 2})
    assert container.read_item("a", partition_key="p")["n"] == 2
    container.delete_item("a", partition_key="p")
    assert not exists(container, "a", "p")


def test_read_item_missing_id_raises_not_found(container: ContainerProxy) -> None:
    with pytest.raises(CosmosResourceNotFoundError) as caught:
        container.read_item("missing", partition_key="p")
    assert caught.value.status_code == 404
    assert "NotFound" in str(caught.value)


def test_read_item_wrong_partition_key_raises_not_found(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p"})
    with pytest.raises(CosmosResourceNotFoundError):
        container.read_item("a", partition_key="other")


def test_create_item_existing_id_raises_conflict(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p"})
    with pytest.raises(CosmosResourceExistsError) as caught:
        container.create_item({"id": "a", "pk": "p"})
    assert caught.value.status_code == 409


def test_replace_item_stale_etag_raises_precondition_failed(container: ContainerProxy) -> None:
    stale = container.create_item({"id": "a", "pk": "p", "n": 1})
    container.upsert_item({"id": "a", "pk": "p", "n": 2})
    with pytest.raises(CosmosAccessConditionFailedError):
        container.replace_item(
            "a",
            {"id": "a", "pk": "p", "n": 3},
            etag=stale["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )


def test_item_lsn_each_write_increases(container: ContainerProxy) -> None:
    first = container.create_item({"id": "a", "pk": "p"})["_lsn"]
    second = container.create_item({"id": "b", "pk": "p"})["_lsn"]
    third = container.upsert_item({"id": "a", "pk": "p", "n": 1})["_lsn"]
    assert first < second < third
    assert container.read_item("a", partition_key="p")["_lsn"] == third


# --- change feed -------------------------------------------------------------------------


def test_change_feed_from_beginning_returns_items_in_write_order(container: ContainerProxy) -> None:
    for i in range(3):
        container.create_item({"id": f"d{i}", "pk": f"p{i}"})
    items, _ = drain(container, start_time="Beginning")
    assert ids(items) == ["d0", "d1", "d2"]
    assert [item["_lsn"] for item in items] == sorted(item["_lsn"] for item in items)


def test_change_feed_from_now_sees_only_later_writes(container: ContainerProxy) -> None:
    container.create_item({"id": "before", "pk": "p"})
    items, continuation = drain(container, start_time="Now")
    container.create_item({"id": "after", "pk": "p"})
    later, _ = drain(container, continuation=continuation)
    assert items == []
    assert ids(later) == ["after"]


def test_change_feed_from_point_in_time_skips_older_writes(container: ContainerProxy) -> None:
    old = container.create_item({"id": "old", "pk": "p"})
    # _ts and If-Modified-Since have one-second resolution: start at the next second.
    start = old["_ts"] + 1
    assert wait_until(lambda: time.time() >= start, timeout=3)
    container.create_item({"id": "new", "pk": "p"})
    items, _ = drain(container, start_time=datetime.fromtimestamp(start, tz=UTC))
    assert ids(items) == ["new"]


def test_change_feed_from_continuation_returns_only_new_writes(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p"})
    first, continuation = drain(container, start_time="Beginning")
    container.create_item({"id": "b", "pk": "p"})
    container.upsert_item({"id": "a", "pk": "p", "n": 1})
    resumed, _ = drain(container, continuation=continuation)
    assert ids(first) == ["a"]
    assert ids(resumed) == ["b", "a"]


def test_change_feed_max_item_count_pages_two_two_one(container: ContainerProxy) -> None:
    for i in range(5):
        container.create_item({"id": f"d{i}", "pk": "p"})
    feed = container.query_items_change_feed(start_time="Beginning", max_item_count=2)
    pages = [ids(list(page)) for page in feed.by_page()]
    assert pages == [["d0", "d1"], ["d2", "d3"], ["d4"]]


def test_change_feed_page_never_ends_inside_a_transactional_batch(
    container: ContainerProxy,
) -> None:
    # One batch = one LSN; the continuation is an LSN, so a page cut inside the batch would
    # make the next read skip the rest of it (found by the chaos test: one event lost).
    container.create_item({"id": "before", "pk": "p"})
    container.execute_item_batch(
        batch_operations=[("create", ({"id": f"t{i}", "pk": "p"},)) for i in range(3)],
        partition_key="p",
    )
    container.create_item({"id": "after", "pk": "p"})

    feed = container.query_items_change_feed(start_time="Beginning", max_item_count=2)
    pages = [ids(list(page)) for page in feed.by_page()]

    assert pages == [["before", "t0", "t1", "t2"], ["after"]]


def test_change_feed_nothing_new_returns_empty(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p"})
    _, continuation = drain(container, start_time="Beginning")
    again, next_continuation = drain(container, continuation=continuation)
    assert again == []
    assert next_continuation == continuation


def test_change_feed_quick_updates_returns_latest_version_once(container: ContainerProxy) -> None:
    _, continuation = drain(container, start_time="Now")
    for version in range(3):
        container.upsert_item({"id": "a", "pk": "p", "version": version})
    items, _ = drain(container, continuation=continuation)
    assert [(item["id"], item["version"]) for item in items] == [("a", 2)]


def test_change_feed_deleted_item_not_emitted(container: ContainerProxy) -> None:
    container.create_item({"id": "kept", "pk": "p"})
    container.create_item({"id": "deleted", "pk": "p"})
    container.delete_item("deleted", partition_key="p")
    items, _ = drain(container, start_time="Beginning")
    assert ids(items) == ["kept"]


def test_change_feed_partition_key_returns_only_that_partition(container: ContainerProxy) -> None:
    for i in range(6):
        container.create_item({"id": f"d{i}", "pk": f"p{i % 3}"})
    items, continuation = drain(container, start_time="Beginning", partition_key="p1")
    container.create_item({"id": "late-p1", "pk": "p1"})
    container.create_item({"id": "late-p2", "pk": "p2"})
    resumed, _ = drain(container, continuation=continuation)
    assert ids(items) == ["d1", "d4"]
    assert ids(resumed) == ["late-p1"]


def test_change_feed_whole_feed_range_returns_every_item(container: ContainerProxy) -> None:
    ranges = list(container.read_feed_ranges())
    for i in range(3):
        container.create_item({"id": f"d{i}", "pk": f"p{i}"})
    items, continuation = drain(container, start_time="Beginning", feed_range=ranges[0])
    container.create_item({"id": "late", "pk": "p9"})
    resumed, _ = drain(container, continuation=continuation)
    assert len(ranges) == 1
    assert ids(items) == ["d0", "d1", "d2"]
    assert ids(resumed) == ["late"]


# --- transactional batch -----------------------------------------------------------------


def test_batch_third_operation_conflicts_writes_nothing(container: ContainerProxy) -> None:
    container.create_item({"id": "taken", "pk": "p", "n": 0})
    _, continuation = drain(container, start_time="Now")
    operations: list[Any] = [
        ("create", ({"id": "new", "pk": "p"},)),
        ("upsert", ({"id": "taken", "pk": "p", "n": 1},)),
        ("create", ({"id": "taken", "pk": "p"},)),
    ]
    with pytest.raises(CosmosBatchOperationError) as caught:
        container.execute_item_batch(batch_operations=operations, partition_key="p")
    statuses = [r["statusCode"] for r in caught.value.operation_responses]
    assert (caught.value.error_index, statuses) == (2, [424, 424, 409])
    assert not exists(container, "new", "p")
    assert container.read_item("taken", partition_key="p")["n"] == 0
    assert drain(container, continuation=continuation)[0] == []


def test_batch_patch_and_read_operations_apply(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p", "n": 1})
    operations: list[Any] = [
        ("patch", ("a", [{"op": "incr", "path": "/n", "value": 5}])),
        ("create", ({"id": "b", "pk": "p"},)),
        ("read", ("a",)),
    ]
    results = container.execute_item_batch(batch_operations=operations, partition_key="p")
    assert [r["statusCode"] for r in results] == [200, 201, 200]
    assert results[2]["resourceBody"]["n"] == 6
    assert exists(container, "b", "p")


# --- time to live --------------------------------------------------------------------------


def test_item_container_default_ttl_expires_item(cosmos_database: DatabaseProxy) -> None:
    container = new_container(cosmos_database, default_ttl=1)
    container.create_item({"id": "a", "pk": "p"})
    assert wait_until(lambda: not exists(container, "a", "p"))
    assert drain(container, start_time="Beginning")[0] == []
    query = "SELECT * FROM c"
    assert list(container.query_items(query, enable_cross_partition_query=True)) == []


def test_item_ttl_with_ttl_on_container_expires_only_that_item(
    cosmos_database: DatabaseProxy,
) -> None:
    container = new_container(cosmos_database, default_ttl=-1)
    container.create_item({"id": "short", "pk": "p", "ttl": 1})
    container.create_item({"id": "kept", "pk": "p"})
    assert wait_until(lambda: not exists(container, "short", "p"))
    assert exists(container, "kept", "p")
    assert ids(drain(container, start_time="Beginning")[0]) == ["kept"]


# --- process lifecycle and persistence ----------------------------------------------------


def test_local_cosmos_restart_with_data_file_keeps_items_and_continuation(tmp_path: Path) -> None:
    data_file = tmp_path / "cosmos.json"
    with LocalCosmos(data_file=data_file) as server:
        database = server.client().create_database("persisted")
        container = new_container(database)
        container.create_item({"id": "a", "pk": "p"})
        _, continuation = drain(container, start_time="Beginning")
        container_id = container.id
    with LocalCosmos(data_file=data_file) as server:
        container = (
            server.client().get_database_client("persisted").get_container_client(container_id)
        )
        kept = container.read_item("a", partition_key="p")
        container.create_item({"id": "b", "pk": "p"})
        resumed, _ = drain(container, continuation=continuation)
    assert kept["id"] == "a"
    assert ids(resumed) == ["b"]
    assert resumed[0]["_lsn"] > kept["_lsn"]


def test_local_cosmos_context_exit_leaves_no_process() -> None:
    with LocalCosmos() as server:
        pid = server.pid
        assert pid is not None
        assert server.client().list_databases() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_local_cosmos_node_not_on_path_raises_devstack_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DevStackError, match="node"):
        LocalCosmos().start()


def test_local_cosmos_npm_packages_missing_raises_devstack_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("devstack.cosmos.SERVER_DIR", tmp_path)
    with pytest.raises(DevStackError, match="node_modules is missing: run `make setup`"):
        LocalCosmos().start()


def test_cli_port_zero_prints_ready_and_exits_zero_on_sigterm() -> None:
    ready, code = first_line_then_sigterm("devstack.cosmos", "--port", "0")

    assert ready.startswith("READY https://127.0.0.1:")
    assert code == 0


def test_dev_cosmos_command_without_port_serves_on_a_free_port() -> None:
    ready, code = first_line_then_sigterm("events", "dev", "cosmos")

    port = int(ready.removeprefix("READY https://127.0.0.1:").rstrip().rstrip("/"))
    assert port not in (0, 8081)
    assert code == 0


@pytest.mark.parametrize("latency", [-0.001, 10.5])
def test_local_cosmos_latency_out_of_range_raises_devstack_error(latency: float) -> None:
    with pytest.raises(DevStackError, match="latency"):
        LocalCosmos(latency=latency)


def test_launcher_invalid_latency_exits_2_with_usage() -> None:
    launcher = REPO / "devstack" / "cosmos" / "launcher.js"
    done = subprocess.run(
        ["node", str(launcher), "--latency", "soon"],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid latency soon" in done.stderr


def test_cli_invalid_latency_exits_2_with_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devstack.cosmos", "--port", "0", "--latency", "-5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2
    assert "latency must be between 0 and" in done.stderr


def test_local_cosmos_with_latency_write_after_large_page_on_same_connection_succeeds() -> None:
    # A page of 100 documents is a response bigger than a socket's default buffer mark; the
    # client's next request arrives on the same kept-alive connection while it may still be
    # buffered. The server once dropped such connections (HPE_PAUSED) about one write in 20.
    with LocalCosmos(latency=0.005) as server:
        database = server.client().create_database("slow")
        container = new_container(database)
        leases = database.create_container("leases", partition_key=PartitionKey(path="/id"))
        for n in range(300):
            container.upsert_item({"id": f"d{n}", "pk": f"p{n % 7}", "body": "x" * 200})
        lease = leases.create_item({"id": "lease", "continuation": None})
        feed_range = next(iter(container.read_feed_ranges()))
        pages = 0
        for _ in range(40):
            for page in container.query_items_change_feed(
                feed_range=feed_range, start_time="Beginning", max_item_count=100
            ).by_page():
                assert len(list(page)) == 100
                pages += 1
                lease = leases.replace_item(
                    "lease",
                    {"id": "lease", "continuation": str(pages)},
                    etag=lease["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )

    assert pages == 120
    assert lease["continuation"] == "120"
