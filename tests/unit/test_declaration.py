"""The declaration (infra/topology.json) drives every feed; a bad one is refused at start-up
with one message naming the file, the container and the problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from events.core.sources import CdcSource, EventStoreSource, OutboxSource
from events.deployment.catalog import build_feeds
from events.deployment.topology import DEFAULT_TOPOLOGY
from events.errors import SettingsError

Declaration = dict[str, Any]


def _copy(tmp_path: Path, change: Callable[[Declaration], None]) -> Path:
    declaration: Declaration = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    change(declaration)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(declaration), encoding="utf-8")
    return path


def _container(declaration: Declaration, name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = declaration["cosmos"]["containers"]
    [found] = [c for c in containers if c["name"] == name]
    return found


def _refusal(tmp_path: Path, change: Callable[[Declaration], None]) -> str:
    path = _copy(tmp_path, change)
    with pytest.raises(SettingsError) as refused:
        build_feeds(path)
    message = str(refused.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_catalog_example_declaration_gives_one_feed_per_monitored_container() -> None:
    feeds = build_feeds()

    assert [f.function_name for f in feeds] == ["relay_orders", "relay_eventstore"]
    orders, eventstore = feeds
    assert [type(s) for s in orders.sources] == [OutboxSource, CdcSource]
    assert [type(s) for s in eventstore.sources] == [EventStoreSource]
    assert (orders.lease_prefix, orders.partition_key_path) == ("relay-orders.", "/partitionKey")


def test_catalog_new_monitored_container_becomes_a_feed_with_no_python_edited(
    tmp_path: Path,
) -> None:
    def add(declaration: Declaration) -> None:
        declaration["cosmos"]["containers"].append(
            {
                "name": "invoices",
                "role": "monitored",
                "setting": "RELAY_INVOICES_CONTAINER",
                "partitionKey": "/tenant",
                "defaultTtl": -1,
                "feed": {
                    "function": "relay_invoices",
                    "leasePrefix": "relay-invoices.",
                    "sources": ["outbox"],
                },
            }
        )

    feeds = build_feeds(_copy(tmp_path, add))

    [invoices] = [f for f in feeds if f.function_name == "relay_invoices"]
    assert (invoices.container_setting, invoices.partition_key_path) == (
        "RELAY_INVOICES_CONTAINER",
        "/tenant",
    )


def test_catalog_unknown_source_kind_is_refused_naming_the_container(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        lambda d: _container(d, "eventstore")["feed"].update(sources=["eventstore", "kafka"]),
    )

    assert "container 'eventstore'" in message
    assert "unknown source kind 'kafka'" in message


def test_catalog_unknown_contract_is_refused_naming_the_container(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _container(d, "orders")["feed"]["cdc"][0].update(upserted="OrderMoved")
    )

    assert "container 'orders'" in message
    assert "no contract for event type 'OrderMoved' v1" in message


def test_catalog_unknown_contract_version_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _container(d, "orders")["feed"]["cdc"][0].update(version=7)
    )

    assert "container 'orders'" in message
    assert "'OrderUpserted' v7" in message


def test_catalog_field_missing_from_its_contract_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        lambda d: _container(d, "orders")["feed"]["cdc"][0]["fields"].append("customerEmail"),
    )

    assert "container 'orders'" in message
    assert "customerEmail" in message
    assert "OrderUpserted" in message


def test_catalog_system_field_in_a_cdc_rule_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _container(d, "orders")["feed"]["cdc"][0]["fields"].append("_etag")
    )

    assert "container 'orders'" in message
    assert "system fields" in message
    assert "_etag" in message


def test_catalog_duplicate_lease_prefix_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path,
        lambda d: _container(d, "eventstore")["feed"].update(leasePrefix="relay-orders."),
    )

    assert "duplicate feed lease prefix 'relay-orders.'" in message


def test_catalog_duplicate_function_name_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _container(d, "eventstore")["feed"].update(function="relay_orders")
    )

    assert "duplicate feed function name 'relay_orders'" in message


def test_catalog_function_name_the_functions_host_cannot_use_is_refused(tmp_path: Path) -> None:
    message = _refusal(
        tmp_path, lambda d: _container(d, "eventstore")["feed"].update(function="relay-events")
    )

    assert "container 'eventstore'" in message
    assert "feed.function" in message


def test_catalog_cdc_source_without_rules_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _container(d, "orders")["feed"].update(cdc=[]))

    assert "container 'orders'" in message
    assert "cdc rules" in message


def test_catalog_monitored_container_without_a_feed_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, lambda d: _container(d, "eventstore").pop("feed"))

    assert "container 'eventstore'" in message
    assert "needs a feed" in message
