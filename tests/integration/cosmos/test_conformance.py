"""The local Cosmos DB server against the SDK's documented behaviour (azure-cosmos 4.17).

Each test is one call a user (or the SDK's own samples) makes, and the answer Azure gives:
status codes and error codes, limits (2 MB items and batches, 100 operations, TTL values),
headers the SDK reads (`lsn`, session token), feed ranges over several physical partitions.
References: the SDK's docstrings and samples (document_management.py, transactional_batch.py,
change_feed_management.py, feed_range_management.py, index_management.py) and
https://learn.microsoft.com/azure/cosmos-db/concepts-limits
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)
from azure.cosmos.partition_key import NonePartitionKeyValue

from devstack.cosmos import DevStackError, LocalCosmos
from tests.commands import first_line_then_sigterm
from tests.fixtures.cosmos import PARTITIONS

pytestmark = pytest.mark.integration

TWO_MB = 2 * 1024 * 1024


def new_container(database: DatabaseProxy, **options: Any) -> ContainerProxy:
    created: ContainerProxy = database.create_container(
        id=f"c-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/pk"), **options
    )
    return created


@pytest.fixture
def container(cosmos_database: DatabaseProxy) -> ContainerProxy:
    return new_container(cosmos_database)


@pytest.fixture
def partitioned_database(partitioned_cosmos_client: CosmosClient) -> Iterator[DatabaseProxy]:
    database = partitioned_cosmos_client.create_database(id=f"test-{uuid.uuid4().hex[:12]}")
    yield database
    with contextlib.suppress(CosmosResourceNotFoundError):
        partitioned_cosmos_client.delete_database(database)


@pytest.fixture
def partitioned(partitioned_database: DatabaseProxy) -> ContainerProxy:
    """A container with PARTITIONS feed ranges and 60 items over 60 partition keys."""
    created = new_container(partitioned_database)
    for i in range(60):
        created.create_item({"id": f"item-{i}", "pk": f"key-{i}"})
    return created


def ids(items: Any) -> set[str]:
    return {item["id"] for item in items}


def status_of(call: Any) -> int:
    with pytest.raises(CosmosHttpResponseError) as caught:
        call()
    status = caught.value.status_code
    assert status is not None
    return status


# --- feed ranges over several physical partitions ------------------------------------------


def test_read_feed_ranges_partitioned_server_returns_contiguous_ranges_covering_epk_space(
    partitioned: ContainerProxy,
) -> None:
    ranges = [feed_range["Range"] for feed_range in partitioned.read_feed_ranges()]

    bounds = sorted((r["min"], r["max"]) for r in ranges)
    assert len(bounds) == PARTITIONS
    assert bounds[0][0] == ""
    assert bounds[-1][1] == "FF"
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))


def test_query_items_feed_range_each_range_returns_only_its_documents(
    partitioned: ContainerProxy,
) -> None:
    per_range = [
        ids(partitioned.query_items("SELECT * FROM c", feed_range=feed_range))
        for feed_range in partitioned.read_feed_ranges()
    ]

    assert sum(len(found) for found in per_range) == 60
    assert set().union(*per_range) == {f"item-{i}" for i in range(60)}
    assert sum(1 for found in per_range if found) > 1  # spread, not all in one range


def test_query_items_feed_range_matches_the_range_of_the_items_partition_key(
    partitioned: ContainerProxy,
) -> None:
    for feed_range in partitioned.read_feed_ranges():
        for item in partitioned.query_items("SELECT * FROM c", feed_range=feed_range):
            own = partitioned.feed_range_from_partition_key(item["pk"])
            assert partitioned.is_feed_range_subset(feed_range, own)


def test_query_items_feed_range_single_range_container_returns_every_document(
    container: ContainerProxy,
) -> None:
    for i in range(5):
        container.create_item({"id": f"i{i}", "pk": f"k{i}"})
    (only_range,) = container.read_feed_ranges()

    found = ids(container.query_items("SELECT * FROM c", feed_range=only_range))

    assert found == {f"i{i}" for i in range(5)}


def test_query_items_no_partition_key_without_cross_partition_flag_raises_bad_request(
    container: ContainerProxy,
) -> None:
    container.create_item({"id": "a", "pk": "p"})

    status = status_of(lambda: list(container.query_items("SELECT * FROM c WHERE c.n = 1")))

    assert status == 400


def test_query_items_populate_query_metrics_returns_metrics_header(
    container: ContainerProxy,
) -> None:
    container.create_item({"id": "a", "pk": "p"})
    pages = container.query_items("SELECT * FROM c", partition_key="p", populate_query_metrics=True)
    list(pages)

    metrics = container.client_connection.last_response_headers["x-ms-documentdb-query-metrics"]
    assert all("=" in pair for pair in metrics.split(";"))
    assert "retrievedDocumentCount=1" in metrics.split(";")


def test_change_feed_feed_range_returns_only_that_ranges_documents(
    partitioned: ContainerProxy,
) -> None:
    by_query = [
        ids(partitioned.query_items("SELECT * FROM c", feed_range=feed_range))
        for feed_range in partitioned.read_feed_ranges()
    ]
    by_feed = [
        ids(partitioned.query_items_change_feed(feed_range=feed_range, start_time="Beginning"))
        for feed_range in partitioned.read_feed_ranges()
    ]

    assert by_feed == by_query


def test_change_feed_continuation_per_range_returns_only_new_changes_of_that_range(
    partitioned: ContainerProxy,
) -> None:
    feed_range = next(iter(partitioned.read_feed_ranges()))
    before = ids(partitioned.query_items("SELECT * FROM c", feed_range=feed_range))
    list(partitioned.query_items_change_feed(feed_range=feed_range, start_time="Beginning"))
    continuation = partitioned.client_connection.last_response_headers["etag"]
    for item_id in before:
        partitioned.upsert_item({"id": item_id, "pk": item_id.replace("item", "key"), "v": 2})
    for i in range(60, 80):
        partitioned.create_item({"id": f"item-{i}", "pk": f"key-{i}"})

    changes = list(partitioned.query_items_change_feed(continuation=continuation))

    now_in_range = ids(partitioned.query_items("SELECT * FROM c", feed_range=feed_range))
    assert ids(changes) == now_in_range
    assert before <= now_in_range


def test_query_items_cross_partition_aggregate_counts_every_range(
    partitioned: ContainerProxy,
) -> None:
    counts: list[Any] = list(
        partitioned.query_items("SELECT VALUE COUNT(1) FROM c", enable_cross_partition_query=True)
    )

    assert counts == [60]


def test_create_container_high_throughput_gets_azures_partition_count(
    cosmos_database: DatabaseProxy,
) -> None:
    # Azure: above 10 000 RU/s, one physical partition per 6 000 RU/s.
    created = new_container(cosmos_database, offer_throughput=30000)

    assert len(list(created.read_feed_ranges())) == 5
    assert created.get_throughput().offer_throughput == 30000


def test_replace_throughput_above_capacity_splits_and_change_feed_continues(
    cosmos_database: DatabaseProxy,
) -> None:
    created = new_container(cosmos_database, offer_throughput=12000)
    for i in range(20):
        created.create_item({"id": f"old-{i}", "pk": f"key-{i}"})
    list(created.query_items_change_feed(start_time="Beginning"))
    continuation = created.client_connection.last_response_headers["etag"]
    assert len(list(created.read_feed_ranges())) == 2

    created.replace_throughput(24000)
    for i in range(20):
        created.create_item({"id": f"new-{i}", "pk": f"key-{i}"})

    assert len(list(created.read_feed_ranges(force_refresh=True))) == 4
    assert ids(created.query_items_change_feed(continuation=continuation)) == {
        f"new-{i}" for i in range(20)
    }


# --- items ----------------------------------------------------------------------------------


def test_read_item_given_the_item_dict_returns_it(container: ContainerProxy) -> None:
    created = container.create_item({"id": "a", "pk": "p", "n": 1})

    assert container.read_item(item=created, partition_key="p")["n"] == 1


def test_replace_and_delete_item_given_dicts_succeed_for_many_items(
    container: ContainerProxy,
) -> None:
    # Enough items that a RID written with "/" would appear (the SDK cannot parse one).
    created = [container.create_item({"id": f"i{i}", "pk": "p"}) for i in range(80)]

    for item in created:
        container.replace_item(item=item, body={**item, "n": 2})
        container.delete_item(item=item, partition_key="p")

    assert all("/" not in item["_rid"] for item in created)
    assert list(container.query_items("SELECT * FROM c", partition_key="p")) == []


def test_replace_item_body_with_new_id_replaces_the_document(container: ContainerProxy) -> None:
    container.create_item({"id": "old", "pk": "p"})

    container.replace_item("old", {"id": "new", "pk": "p"})

    assert ids(container.query_items("SELECT * FROM c", partition_key="p")) == {"new"}


def test_delete_item_takes_the_next_lsn(container: ContainerProxy) -> None:
    written = container.create_item({"id": "a", "pk": "p"})

    container.delete_item("a", partition_key="p")

    assert int(container.client_connection.last_response_headers["lsn"]) == written["_lsn"] + 1


def test_create_item_over_two_megabytes_raises_request_entity_too_large(
    container: ContainerProxy,
) -> None:
    status = status_of(lambda: container.create_item({"id": "big", "pk": "p", "x": "a" * TWO_MB}))

    assert status == 413
    assert not list(container.query_items("SELECT * FROM c", partition_key="p"))


def test_create_item_no_response_returns_empty_body_and_stores_item(
    container: ContainerProxy,
) -> None:
    result = container.create_item({"id": "a", "pk": "p"}, no_response=True)

    assert dict(result) == {}
    assert container.read_item("a", partition_key="p")["id"] == "a"


def test_read_item_response_carries_lsn_and_session_token(container: ContainerProxy) -> None:
    written = container.create_item({"id": "a", "pk": "p"})
    container.read_item("a", partition_key="p")

    headers = container.client_connection.last_response_headers
    assert int(headers["lsn"]) == written["_lsn"]
    assert headers["x-ms-session-token"].endswith(f"#{written['_lsn']}")


def test_patch_item_filter_predicate_root_alias_not_met_raises_precondition_failed(
    container: ContainerProxy,
) -> None:
    container.create_item({"id": "a", "pk": "p", "state": "new"})

    with pytest.raises(CosmosAccessConditionFailedError):
        container.patch_item(
            "a",
            "p",
            [{"op": "set", "path": "/state", "value": "done"}],
            filter_predicate="from root where root.state = 'old'",
        )
    assert container.read_item("a", partition_key="p")["state"] == "new"


def test_patch_item_filter_predicate_met_applies_the_patch(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "pk": "p", "state": "New"})

    container.patch_item(
        "a",
        "p",
        [{"op": "set", "path": "/state", "value": "done"}],
        filter_predicate="FROM c WHERE c.state = 'New'",
    )

    assert container.read_item("a", partition_key="p")["state"] == "done"


def test_delete_all_items_by_partition_key_removes_only_that_partition(
    container: ContainerProxy,
) -> None:
    for i in range(3):
        container.create_item({"id": f"a{i}", "pk": "gone"})
    container.create_item({"id": "b", "pk": "kept"})

    container.delete_all_items_by_partition_key("gone")

    assert ids(container.query_items("SELECT * FROM c", enable_cross_partition_query=True)) == {"b"}


# --- TTL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("default_ttl", [-10, 0])
def test_create_container_invalid_default_ttl_raises_bad_request(
    cosmos_database: DatabaseProxy, default_ttl: int
) -> None:
    assert status_of(lambda: new_container(cosmos_database, default_ttl=default_ttl)) == 400


@pytest.mark.parametrize("ttl", [0, -10, None, "10"])
def test_create_item_invalid_ttl_raises_bad_request(
    cosmos_database: DatabaseProxy, ttl: Any
) -> None:
    created = new_container(cosmos_database, default_ttl=10)

    assert status_of(lambda: created.create_item({"id": "a", "pk": "p", "ttl": ttl})) == 400


# --- transactional batch ----------------------------------------------------------------------


def test_batch_item_without_partition_key_commits(container: ContainerProxy) -> None:
    results = container.execute_item_batch(
        [("create", ({"id": "a"},)), ("upsert", ({"id": "b"},))],
        partition_key=NonePartitionKeyValue,
    )

    assert [r["statusCode"] for r in results] == [201, 201]
    assert container.read_item("a", partition_key=NonePartitionKeyValue)["id"] == "a"


def test_batch_response_carries_lsn_header(container: ContainerProxy) -> None:
    container.execute_item_batch([("create", ({"id": "a", "pk": "p"},))], partition_key="p")

    lsn = container.client_connection.last_response_headers["lsn"]
    assert int(lsn) == container.read_item("a", partition_key="p")["_lsn"]


def test_batch_writes_share_one_lsn(container: ContainerProxy) -> None:
    before = container.create_item({"id": "x", "pk": "p"})["_lsn"]

    results = container.execute_item_batch(
        [("create", ({"id": "a", "pk": "p"},)), ("upsert", ({"id": "b", "pk": "p"},))],
        partition_key="p",
    )

    assert {r["resourceBody"]["_lsn"] for r in results} == {before + 1}


def test_batch_incomplete_hierarchical_key_raises_bad_request(
    cosmos_database: DatabaseProxy,
) -> None:
    created = cosmos_database.create_container(
        id=f"c-{uuid.uuid4().hex[:8]}",
        partition_key=PartitionKey(path=["/a", "/b"], kind="MultiHash"),
    )
    operations = [("create", ({"id": "i", "a": "x", "b": "y"},))]

    with pytest.raises(CosmosHttpResponseError) as caught:
        created.execute_item_batch(operations, partition_key=["x"])
    assert caught.value.status_code == 400
    assert "doesn't correspond to definition in the collection" in caught.value.message


def test_batch_over_one_hundred_operations_raises_bad_request(container: ContainerProxy) -> None:
    operations = [("create", ({"id": f"i{i}", "pk": "p"},)) for i in range(101)]

    with pytest.raises(CosmosHttpResponseError) as caught:
        container.execute_item_batch(operations, partition_key="p")
    assert caught.value.status_code == 400
    assert "more operations than what is supported" in caught.value.message


def test_batch_over_two_megabytes_raises_request_entity_too_large(
    container: ContainerProxy,
) -> None:
    operations = [
        ("create", ({"id": f"i{i}", "pk": "p", "x": "a" * (TWO_MB // 4)},)) for i in range(5)
    ]

    with pytest.raises(CosmosHttpResponseError) as caught:
        container.execute_item_batch(operations, partition_key="p")
    assert caught.value.status_code == 413
    assert caught.value.message.startswith("(RequestEntityTooLarge)")


def test_batch_failing_operation_raises_batch_error_and_writes_nothing(
    container: ContainerProxy,
) -> None:
    container.create_item({"id": "a", "pk": "p"})

    with pytest.raises(CosmosBatchOperationError) as caught:
        container.execute_item_batch(
            [("create", ({"id": "b", "pk": "p"},)), ("create", ({"id": "a", "pk": "p"},))],
            partition_key="p",
        )
    assert [r["statusCode"] for r in caught.value.operation_responses] == [424, 409]
    assert ids(container.query_items("SELECT * FROM c", partition_key="p")) == {"a"}


# --- containers -------------------------------------------------------------------------------


def test_read_container_without_indexing_policy_returns_azures_default(
    container: ContainerProxy,
) -> None:
    policy = container.read()["indexingPolicy"]

    assert policy["indexingMode"] == "consistent"
    assert policy["automatic"] is True
    assert policy["includedPaths"] == [{"path": "/*"}]
    assert {"path": '/"_etag"/?'} in policy["excludedPaths"]


def test_change_feed_all_versions_mode_raises_capability_not_enabled(
    container: ContainerProxy,
) -> None:
    # Not implemented here: answered as by an account without the capability.
    with pytest.raises(CosmosHttpResponseError) as caught:
        list(container.query_items_change_feed(mode="AllVersionsAndDeletes"))
    assert caught.value.status_code == 400
    assert "All Versions and Deletes" in caught.value.message
    assert "must be enabled" in caught.value.message


def test_list_conflicts_single_region_returns_none(container: ContainerProxy) -> None:
    assert list(container.list_conflicts()) == []


def test_execute_stored_procedure_writes_in_its_partition_and_returns_body(
    container: ContainerProxy,
) -> None:
    body = (
        "function (id) { var c = getContext().getCollection();"
        " c.createDocument(c.getSelfLink(), {id: id, pk: 'p'}, {}, function (err) {"
        " if (err) throw err; getContext().getResponse().setBody('made ' + id); }); }"
    )
    container.scripts.create_stored_procedure({"id": "make", "body": body})

    arguments: Any = ["a"]  # the SDK annotates params as a list of dicts; any JSON goes
    result = container.scripts.execute_stored_procedure("make", params=arguments, partition_key="p")

    assert result == "made a"
    assert container.read_item("a", partition_key="p")["pk"] == "p"


def test_execute_stored_procedure_other_partition_raises_bad_request_and_writes_nothing(
    container: ContainerProxy,
) -> None:
    body = (
        "function () { var c = getContext().getCollection();"
        " c.createDocument(c.getSelfLink(), {id: 'a', pk: 'p'}); }"
    )
    container.scripts.create_stored_procedure({"id": "make", "body": body})

    status = status_of(
        lambda: container.scripts.execute_stored_procedure("make", partition_key="other")
    )

    assert status == 400
    assert list(container.query_items("SELECT * FROM c", enable_cross_partition_query=True)) == []


def test_create_user_raises_bad_request_naming_the_feature(
    cosmos_database: DatabaseProxy,
) -> None:
    with pytest.raises(CosmosHttpResponseError) as caught:
        cosmos_database.create_user({"id": "someone"})
    assert caught.value.status_code == 400
    assert "users are not supported" in caught.value.message


def test_partition_layout_survives_restart_with_data_file(tmp_path: Path) -> None:
    data = tmp_path / "cosmos.json"
    with LocalCosmos(partitions=3, data_file=data) as server:
        database = server.client().create_database("d")
        created = new_container(database)
        created.create_item({"id": "a", "pk": "p"})
        before = [r["Range"] for r in created.read_feed_ranges()]

    with LocalCosmos(partitions=1, data_file=data) as server:
        again = server.client().get_database_client("d").get_container_client(created.id)
        after = [r["Range"] for r in again.read_feed_ranges()]
        assert again.read_item("a", partition_key="p")["id"] == "a"

    assert len(after) == 3
    assert after == before


# --- starting it -------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [0, 65])
def test_local_cosmos_partitions_out_of_range_raises_devstack_error(partitions: int) -> None:
    with pytest.raises(DevStackError, match="partitions"):
        LocalCosmos(partitions=partitions)


def test_dev_cosmos_command_partitions_option_serves() -> None:
    ready, code = first_line_then_sigterm("devstack.cosmos", "--partitions", "3")

    assert ready.startswith("READY https://127.0.0.1:")
    assert code == 0
