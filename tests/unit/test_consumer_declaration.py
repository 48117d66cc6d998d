"""Declared consumers (``serviceBus.consumers``): a bad one is refused at start-up with one
message naming the file, the consumer and the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from events.core.handling import InMemoryConsumerStore
from events.deployment.catalog import load_deployment
from events.deployment.handlers import order_status
from events.deployment.settings import setting_defaults
from events.deployment.topology import DEFAULT_TOPOLOGY, load_topology
from events.errors import SettingsError

Declaration = dict[str, Any]


def _copy(tmp_path: Path, change: Callable[[Declaration], None]) -> Path:
    declaration: Declaration = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    change(declaration)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(declaration), encoding="utf-8")
    return path


def _consumer(declaration: Declaration) -> dict[str, Any]:
    consumers: list[dict[str, Any]] = declaration["serviceBus"]["consumers"]
    return consumers[0]


def _refusal(tmp_path: Path, change: Callable[[Declaration], None]) -> str:
    path = _copy(tmp_path, change)
    with pytest.raises(SettingsError) as refused:
        load_deployment(path)
    message = str(refused.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_catalog_example_consumer_resolves_its_handler_and_container() -> None:
    [consumer] = load_deployment().consumers

    assert consumer.handler is order_status.handle
    assert (consumer.function_name, consumer.topic, consumer.subscription) == (
        "consume_order_status",
        "integration-events",
        "order-status",
    )
    assert (consumer.container, consumer.partition_key_path, consumer.mode) == (
        "order-status",
        "/orderId",
        "transactional",
    )


def test_settings_defaults_name_each_consumer_topic_and_subscription() -> None:
    defaults = setting_defaults(load_topology())

    assert defaults["ORDER_STATUS_TOPIC"] == "integration-events"
    assert defaults["ORDER_STATUS_SUBSCRIPTION"] == "order-status"
    assert defaults["ORDER_STATUS_CONTAINER"] == "order-status"


def test_topology_consumer_unknown_topic_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(topic="nope"))

    assert "consumer 'order-status': unknown topic 'nope'" in message


def test_topology_consumer_unknown_subscription_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(subscription="nope"))

    assert "topic 'integration-events' has no subscription 'nope'" in message


def test_topology_consumer_subscription_without_sessions_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(subscription="orders-placed"))

    assert "integration-events/orders-placed is not session-enabled" in message


def test_topology_consumer_function_named_like_a_feed_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(function="relay_orders"))

    assert "duplicate function name" in message
    assert "'relay_orders'" in message


def test_topology_two_consumers_with_one_function_name_refused(tmp_path: Path) -> None:
    def twice(declaration: Declaration) -> None:
        second = {
            **_consumer(declaration),
            "name": "order-status-2",
            "topicSetting": "T2",
            "subscriptionSetting": "S2",
        }
        declaration["serviceBus"]["consumers"].append(second)

    message = _refusal(tmp_path, twice)

    assert "duplicate function name" in message
    assert "'consume_order_status'" in message


def test_topology_consumer_setting_shared_with_a_container_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _consumer(d).update(topicSetting="RELAY_ORDERS_CONTAINER")
    )

    assert "duplicate setting name" in message


@pytest.mark.parametrize("path", ["no-colon", "events.x:", "a..b:f", "events.x:f()", ":f"])
def test_topology_consumer_handler_path_malformed_refused(tmp_path: Path, path: str) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(handler=path))

    assert "consumer 'order-status': handler:" in message


def test_catalog_consumer_handler_module_missing_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(handler="events.nowhere:handle"))

    assert "consumer 'order-status'" in message
    assert "module 'events.nowhere' cannot be imported" in message


def test_catalog_consumer_handler_function_missing_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        lambda d: _consumer(d).update(handler="events.deployment.handlers.order_status:nothing"),
    )

    assert "has no function 'nothing'" in message


def test_topology_consumer_container_of_another_role_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(container="inbox"))

    assert "container 'inbox' is not a declared container with role 'consumer'" in message


def test_topology_consumer_unknown_mode_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _consumer(d).update(mode="exactly-once"))

    assert "consumer 'order-status': mode:" in message


def test_in_memory_consumer_store_sets_the_partition_key_field() -> None:
    store = InMemoryConsumerStore("/orderId")

    store.partition("o-1").upsert({"id": "o-1", "orderId": "other", "status": "placed"})

    assert store.partitions == {"o-1": {"o-1": {"id": "o-1", "orderId": "o-1", "status": "placed"}}}
    assert store.partition("o-2").read("o-1") is None
