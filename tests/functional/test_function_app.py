"""The Functions app through azure-functions' own objects: bindings, retry, invocation."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from events.changefeed import InMemoryChangeFeed, InMemoryLeaseStore, LeaseManager
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.deployment import settings
from events.deployment.topology import iso_duration_seconds, load_topology
from events.errors import PublishUnavailableError, SettingsError
from events.hosts.functions import blueprint
from events.hosts.lag import LagGauges, LagMonitor, MonitoredFeed
from events.hosts.runtime import Runtime
from tests import factories
from tests.app_functions import feed_functions, registered_functions


def _bindings(fn: Any) -> dict[str, Any]:
    [binding] = json.loads(fn.get_function_json())["bindings"]
    assert isinstance(binding, dict)
    return binding


def _functions(app: func.FunctionApp) -> dict[str, Any]:
    return {str(fn.get_function_name()): fn for fn in app.get_functions()}


def test_app_registers_one_trigger_per_feed_and_consumer_and_the_two_timers() -> None:
    functions = {fn.get_function_name(): _bindings(fn)["type"] for fn in registered_functions()}

    feeds = {f.function_name: "cosmosDBTrigger" for f in factories.DEPLOYMENT.feeds}
    consumers = {c.function_name: "serviceBusTrigger" for c in factories.DEPLOYMENT.consumers}
    assert functions == {
        **feeds,
        **consumers,
        "quarantine_expiry": "timerTrigger",
        "feed_lag": "timerTrigger",
    }


def test_app_triggers_use_setting_names_and_never_create_the_lease_container() -> None:
    for fn in feed_functions():
        binding = _bindings(fn)
        assert binding["connection"] == settings.COSMOS_CONNECTION
        assert binding["leaseConnection"] == settings.COSMOS_CONNECTION
        assert binding["databaseName"] == f"%{settings.DATABASE}%"
        assert binding["leaseContainerName"] == "%RELAY_LEASES_CONTAINER%"
        assert binding["containerName"].startswith("%")
        assert binding["createLeaseContainerIfNotExists"] is False
        assert binding["maxItemsPerInvocation"] > 0


def test_app_lease_prefixes_are_unique_and_match_the_topology() -> None:
    prefixes = {
        fn.get_function_name(): _bindings(fn)["leaseContainerPrefix"] for fn in feed_functions()
    }
    topology = {
        c.feed.function: c.feed.lease_prefix
        for c in load_topology().cosmos.containers
        if c.feed is not None
    }

    assert len(set(prefixes.values())) == len(prefixes)
    assert prefixes == topology


def test_app_retry_policy_retries_forever_with_capped_exponential_backoff() -> None:
    for fn in feed_functions():
        policy = fn.get_settings_dict("retry_policy")
        assert policy is not None
        assert policy["strategy"] == "exponential_backoff"
        assert policy["max_retry_count"] == "-1"
        hours, minutes, seconds = (int(p) for p in policy["maximum_interval"].split(":"))
        assert 0 < hours * 3600 + minutes * 60 + seconds <= 600


def test_app_maximum_retry_delay_is_shorter_than_every_dedup_window() -> None:
    [policy] = {fn.get_settings_dict("retry_policy")["maximum_interval"] for fn in feed_functions()}
    hours, minutes, seconds = (int(p) for p in policy.split(":"))
    topology = load_topology()
    windows = [t.duplicate_detection_history_time_window for t in topology.service_bus.topics]
    windows += [q.duplicate_detection_history_time_window for q in topology.service_bus.queues]

    for window in windows:
        assert iso_duration_seconds(window) > hours * 3600 + minutes * 60 + seconds


def _app_with(publisher: InMemoryPublisher) -> tuple[func.FunctionApp, InMemoryQuarantine]:
    runtime, _, quarantine = factories.in_memory_runtime(publisher)
    app = func.FunctionApp()
    app.register_functions(blueprint(lambda: runtime))
    return app, quarantine


def test_app_function_invoked_with_document_list_publishes_the_batch() -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    app, _ = _app_with(publisher)
    relay_orders = _functions(app)["relay_orders"].get_user_function()
    documents = func.DocumentList(
        [
            func.Document.from_dict(factories.placed("o-1", "e-1")),
            func.Document.from_dict(factories.order("o-1")),
        ]
    )

    relay_orders(documents)

    assert [m.subject for m in publisher.delivered["integration-events"]] == [
        "OrderPlaced",
        "OrderUpserted",
    ]


def test_app_function_raises_when_service_bus_is_down_so_the_host_retries() -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    publisher.fail_on_send(1)
    app, _ = _app_with(publisher)
    relay_orders = _functions(app)["relay_orders"].get_user_function()
    documents = func.DocumentList([func.Document.from_dict(factories.placed("o-1", "e-1"))])

    with pytest.raises(PublishUnavailableError):
        relay_orders(documents)
    relay_orders(documents)

    assert [m.message_id for m in publisher.delivered["integration-events"]] == [
        factories.outbox_id("o-1", "e-1")
    ]


def test_app_function_quarantines_invalid_documents_and_returns_normally() -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    app, quarantine = _app_with(publisher)
    relay_eventstore = _functions(app)["relay_eventstore"].get_user_function()
    broken = factories.stream_event("p-1", 1)
    del broken["streamId"]

    relay_eventstore(func.DocumentList([func.Document.from_dict(broken)]))

    assert [r.reason.value for r in quarantine.records.values()] == ["invalid-document"]


def test_app_function_failing_retries_log_one_warning_and_one_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = InMemoryPublisher(["integration-events", "payments"])
    publisher.fail_on_send(1, 2, 3)
    app, _ = _app_with(publisher)
    relay_orders = _functions(app)["relay_orders"].get_user_function()
    documents = func.DocumentList([func.Document.from_dict(factories.placed("o-1", "e-1"))])
    caplog.set_level(logging.INFO, logger="events.hosts.functions")

    for _ in range(3):
        with pytest.raises(PublishUnavailableError):
            relay_orders(documents)
    relay_orders(documents)

    lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "events.hosts.functions"
    ]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert "feed relay_orders" in lines[0][1]
    assert "PublishUnavailableError" in lines[0][1]
    assert "feed relay_orders available again" in lines[1][1]


def test_app_function_bad_settings_raise_every_retry_and_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_runtime() -> Runtime:
        return Runtime.from_environment({"RELAY_COSMOS": "AccountEndpoint=https://h/;"})

    app = func.FunctionApp()
    app.register_functions(blueprint(broken_runtime))
    relay_orders = _functions(app)["relay_orders"].get_user_function()
    documents = func.DocumentList([func.Document.from_dict(factories.placed("o-1", "e-1"))])
    caplog.set_level(logging.INFO, logger="events.hosts.functions")

    for _ in range(3):
        with pytest.raises(SettingsError):
            relay_orders(documents)

    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "events.hosts.functions"
    ]
    assert len(warnings) == 1
    assert "RELAY_COSMOS" in warnings[0]
    assert "RELAY_SERVICEBUS" in warnings[0]


def test_app_quarantine_expiry_timer_warns_once_per_record_near_its_ttl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, _, quarantine = factories.in_memory_runtime()
    runtime.admin = quarantine
    ttl_days = factories.DEPLOYMENT.topology.cosmos.one("quarantine").default_ttl // 86400
    now = datetime.now(UTC)
    runtime.relay("relay_orders").process([factories.order("o-old", status="teleported")])
    [old] = quarantine.records.values()
    quarantine.records[old.id] = replace(old, quarantined_at=now - timedelta(days=ttl_days - 2))
    runtime.relay("relay_orders").process([factories.order("o-new", status="teleported")])
    app = func.FunctionApp()
    app.register_functions(blueprint(lambda: runtime))
    expiry = _functions(app)["quarantine_expiry"].get_user_function()
    caplog.set_level(logging.INFO, logger="events.hosts")

    expiry(TimerRequest(past_due=False))

    warnings = [r.getMessage() for r in caplog.records if r.name == "events.hosts.redrive"]
    assert len(warnings) == 1
    assert f"quarantine record expires soon quarantine_id={old.id}" in warnings[0]
    assert "document_id=o-old" in warnings[0]


def test_app_feed_lag_timer_runs_every_minute_and_not_on_startup() -> None:
    [timer] = [fn for fn in registered_functions() if fn.get_function_name() == "feed_lag"]

    binding = _bindings(timer)

    assert binding["type"] == "timerTrigger"
    assert binding["direction"] == "IN"
    assert binding["schedule"] == "0 * * * * *"
    assert binding["runOnStartup"] is False


def test_app_feed_lag_timer_logs_one_line_per_feed_and_feeds_the_gauges(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, _, _ = factories.in_memory_runtime()
    feeds = {d.function_name: InMemoryChangeFeed() for d in factories.DEPLOYMENT.feeds}
    store = InMemoryLeaseStore()
    for definition in factories.DEPLOYMENT.feeds:
        LeaseManager(
            store,
            prefix=definition.lease_prefix,
            instance_id="worker-1",
            lease_duration=timedelta(minutes=1),
        ).ensure(feeds[definition.function_name].feed_ranges(), "beginning")
    feeds["relay_orders"].write(factories.placed("o-1", "e-1"), "o-1")
    feeds["relay_orders"].write(factories.placed("o-2", "e-2"), "o-2")
    monitor = LagMonitor(
        [
            MonitoredFeed(d.function_name, d.lease_prefix, feeds[d.function_name])
            for d in factories.DEPLOYMENT.feeds
        ],
        store,
    )
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauges = LagGauges(provider.get_meter("test"))
    app = func.FunctionApp()
    app.register_functions(
        blueprint(lambda: runtime, lag_monitor=lambda: monitor, lag_gauges=lambda: gauges)
    )
    feed_lag = _functions(app)["feed_lag"].get_user_function()
    caplog.set_level(logging.INFO, logger="events.hosts")

    feed_lag(TimerRequest(past_due=False))

    lines = [r.getMessage() for r in caplog.records if r.name == "events.hosts.functions"]
    assert len(lines) == len(factories.DEPLOYMENT.feeds)
    assert any(line.startswith("feed lag feed=relay_orders pending=2 ") for line in lines)
    assert any(line.startswith("feed lag feed=relay_eventstore pending=0 ") for line in lines)
    data = reader.get_metrics_data()
    assert data is not None
    changes = {
        (str(p.attributes["feed"]), str(p.attributes["lease"])): p.value  # type: ignore[union-attr,index]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "events.feed.lag.changes"
        for p in metric.data.data_points
    }
    assert changes[("relay_orders", "relay-orders.00-FF")] == 2
    assert changes[("relay_eventstore", "relay-eventstore.00-FF")] == 0
    provider.shutdown()
