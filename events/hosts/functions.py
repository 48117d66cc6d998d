"""Azure Functions host: one Cosmos DB trigger per feed and one Service Bus trigger per
declared consumer. The only module importing azure.functions.

The Cosmos DB trigger checkpoints a batch even when the function raises, so every trigger
carries a retry policy that retries forever with capped exponential backoff: a failed batch
is redelivered, never skipped
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-error-pages#retries).
A failing feed (a setting, a missing entity, a server that does not answer) logs one WARNING
naming the feed and the cause when it starts failing and one INFO when it works again, not one
per retry; the batch still raises every time, so the host retries it.

A consumer's trigger listens on a session-enabled topic subscription (``%SETTING%`` names,
the identity-based ``RELAY_SERVICEBUS`` connection) and hands each message to
``events.hosts.consumers.consume``. Settlement is the host's: returning completes the message,
raising abandons it, and Service Bus dead-letters it after the subscription's
``maxDeliveryCount`` (https://learn.microsoft.com/azure/azure-functions/functions-bindings-service-bus-trigger#peeklock-behavior).
A permanent error is logged as an ERROR and raised all the same (docs/decisions.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func

from events.availability import AvailabilityLog
from events.core.quarantine import ExpiryNotice
from events.deployment.catalog import (
    ConsumerDefinition,
    Deployment,
    FeedDefinition,
    load_deployment,
)
from events.deployment.settings import COSMOS_CONNECTION, DATABASE, SERVICEBUS_CONNECTION
from events.errors import SettingsError
from events.hosts.consumers import Received, consume, is_permanent
from events.hosts.lag import LagGauges, LagMonitor, monitor_for, process_gauges, totals
from events.hosts.redrive import expiry_notice, warn_expiring
from events.hosts.runtime import Runtime, current

__all__ = ["MAX_ITEMS_PER_INVOCATION", "RETRY_MAXIMUM_INTERVAL", "blueprint"]

MAX_ITEMS_PER_INVOCATION = 100
#: Daily at 06:00 UTC (NCRONTAB: second minute hour day month weekday).
QUARANTINE_EXPIRY_SCHEDULE = "0 0 6 * * *"
#: Every minute, at second 0: the lag gauges' refresh (the default metric export interval).
FEED_LAG_SCHEDULE = "0 * * * * *"
RETRY_MINIMUM_INTERVAL = "00:00:02"
RETRY_MAXIMUM_INTERVAL = "00:05:00"

logger = logging.getLogger(__name__)


def _handler(
    definition: FeedDefinition,
    runtime: Callable[[], Runtime],
    availability: AvailabilityLog,
) -> Callable[[func.DocumentList], None]:
    feed = f"feed {definition.function_name}"

    def relay(documents: func.DocumentList) -> None:
        try:
            runtime().relay(definition.function_name).process([doc.to_dict() for doc in documents])
        except Exception as exc:
            availability.down(feed, f"{type(exc).__name__}: {exc}; the batch is retried")
            # Raising (settings, transient error, or any bug) makes the host retry the batch.
            raise
        availability.up(feed)

    relay.__name__ = definition.function_name
    relay.__qualname__ = definition.function_name
    return relay


def _consumer_handler(
    definition: ConsumerDefinition,
    runtime: Callable[[], Runtime],
    availability: AvailabilityLog,
) -> Callable[[func.ServiceBusMessage], None]:
    where = f"consumer {definition.name}"

    def consume_message(message: func.ServiceBusMessage) -> None:
        received = Received(
            message_id=str(message.message_id),
            body=message.get_body(),
            application_properties={
                str(k): v for k, v in (message.application_properties or {}).items()
            },
            content_type=message.content_type,
            delivery_count=message.delivery_count,
        )
        try:
            consume(runtime().consumer(definition.name), received)
        except Exception as exc:
            if not is_permanent(exc) or isinstance(exc, SettingsError):
                availability.down(where, f"{type(exc).__name__}: {exc}; the message is retried")
            # Raising abandons the message: redelivered, dead-lettered after maxDeliveryCount.
            raise
        availability.up(where)

    consume_message.__name__ = definition.function_name
    consume_message.__qualname__ = definition.function_name
    return consume_message


def _register_consumer(
    bp: func.Blueprint,
    definition: ConsumerDefinition,
    runtime: Callable[[], Runtime],
    availability: AvailabilityLog,
) -> None:
    bp.function_name(definition.function_name)(
        bp.service_bus_topic_trigger(
            arg_name="message",
            connection=SERVICEBUS_CONNECTION,
            topic_name=f"%{definition.topic_setting}%",
            subscription_name=f"%{definition.subscription_setting}%",
            is_sessions_enabled=True,
        )(_consumer_handler(definition, runtime, availability))
    )


def blueprint(
    runtime: Callable[[], Runtime] = current,
    deployment: Deployment | None = None,
    lag_monitor: Callable[[], LagMonitor] | None = None,
    lag_gauges: Callable[[], LagGauges] = process_gauges,
) -> func.Blueprint:
    """One trigger per feed of the declaration (default: the one shipped with the app), bound
    to setting names, not values, one Service Bus trigger per declared consumer, plus the
    timers (quarantine expiry, feed lag). A bad
    declaration raises SettingsError here, at start-up. ``lag_monitor`` defaults to one built
    from ``runtime``'s settings on first use (reads the leases and the feeds)."""
    declared = deployment if deployment is not None else load_deployment()
    leases = declared.topology.cosmos.one("leases").setting
    bp = func.Blueprint()  # type: ignore[no-untyped-call]  # the library leaves it untyped
    availability = AvailabilityLog(logger)
    for definition in declared.feeds:
        handler = _handler(definition, runtime, availability)
        bp.function_name(definition.function_name)(
            bp.retry(
                strategy="exponential_backoff",
                max_retry_count="-1",
                minimum_interval=RETRY_MINIMUM_INTERVAL,
                maximum_interval=RETRY_MAXIMUM_INTERVAL,
            )(
                bp.cosmos_db_trigger(
                    arg_name="documents",
                    connection=COSMOS_CONNECTION,
                    database_name=f"%{DATABASE}%",
                    container_name=f"%{definition.container_setting}%",
                    lease_connection=COSMOS_CONNECTION,
                    lease_database_name=f"%{DATABASE}%",
                    lease_container_name=f"%{leases}%",
                    lease_container_prefix=definition.lease_prefix,
                    create_lease_container_if_not_exists=False,
                    max_items_per_invocation=MAX_ITEMS_PER_INVOCATION,
                )(handler)
            )
        )
    for consumer in declared.consumers:
        _register_consumer(bp, consumer, runtime, availability)
    notice = expiry_notice(declared.topology)
    if notice is not None:
        bp.function_name("quarantine_expiry")(
            bp.timer_trigger(
                arg_name="timer", schedule=QUARANTINE_EXPIRY_SCHEDULE, run_on_startup=False
            )(_expiry_handler(runtime, notice))
        )
    monitor = lag_monitor if lag_monitor is not None else _cached_monitor(runtime)
    bp.function_name("feed_lag")(
        bp.timer_trigger(arg_name="timer", schedule=FEED_LAG_SCHEDULE, run_on_startup=False)(
            _lag_handler(monitor, lag_gauges)
        )
    )
    return bp


def _cached_monitor(runtime: Callable[[], Runtime]) -> Callable[[], LagMonitor]:
    built: list[LagMonitor] = []

    def monitor() -> LagMonitor:
        if not built:
            current_runtime = runtime()
            built.append(monitor_for(current_runtime.settings, current_runtime.deployment))
        return built[0]

    return monitor


def _lag_handler(
    monitor: Callable[[], LagMonitor], gauges: Callable[[], LagGauges]
) -> Callable[[func.TimerRequest], None]:
    def feed_lag(timer: func.TimerRequest) -> None:
        """Measure every feed's lag: one INFO line per feed, and the gauges' new figures."""
        rows = monitor().measure()
        gauges().record(rows)
        for feed, (pending, behind) in totals(rows).items():
            leases = sum(1 for row in rows if row.feed == feed)
            logger.info(
                "feed lag feed=%s pending=%d behind_s=%.0f leases=%d",
                feed,
                pending,
                behind,
                leases,
                extra={"feed": feed, "pending": pending, "behind_s": behind},
            )

    return feed_lag


def _expiry_handler(
    runtime: Callable[[], Runtime], notice: ExpiryNotice
) -> Callable[[func.TimerRequest], None]:
    def quarantine_expiry(timer: func.TimerRequest) -> None:
        """Warn about quarantine records the container's TTL deletes within the notice."""
        admin = runtime().admin
        if admin is None:
            raise SettingsError("this runtime has no quarantine admin to list records with")
        due = warn_expiring(admin, notice, datetime.now(UTC))
        logger.info("quarantine expiry check records_expiring_soon=%d", due)

    return quarantine_expiry
