"""The declared consumer as a Service Bus-triggered function, through azure-functions' own
objects: its binding metadata, and messages the relay built handed to it as
``func.ServiceBusMessage``."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from events.core.consumer import InMemoryInbox
from events.core.handling import Documents, InMemoryConsumerStore
from events.core.inbox import InMemoryTransactionalInbox
from events.core.messages import OutgoingMessage
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.deployment import settings
from events.deployment.catalog import Deployment
from events.deployment.topology import ConsumerMode
from events.errors import SettingsError, StoreUnavailableError
from events.hosts.consumers import UnreadableMessageError
from events.hosts.functions import blueprint
from events.hosts.runtime import Runtime
from tests import factories
from tests.app_functions import registered_functions


def _consumer_bindings() -> dict[str, dict[str, Any]]:
    found = {}
    for fn in registered_functions():
        [binding] = json.loads(fn.get_function_json())["bindings"]
        if binding["type"] == "serviceBusTrigger":
            found[str(fn.get_function_name())] = binding
    return found


def test_app_registers_one_session_service_bus_trigger_per_declared_consumer() -> None:
    bindings = _consumer_bindings()

    assert set(bindings) == {c.function_name for c in factories.DEPLOYMENT.consumers}
    binding = bindings["consume_order_status"]
    assert binding["direction"] == "IN"
    assert binding["isSessionsEnabled"] is True
    assert binding["connection"] == settings.SERVICEBUS_CONNECTION
    assert binding["topicName"] == "%ORDER_STATUS_TOPIC%"
    assert binding["subscriptionName"] == "%ORDER_STATUS_SUBSCRIPTION%"


class _Runtime:
    """An in-memory runtime with the consumer's inbox and container, and the relay's output.

    By default the consumer is declared ``mode: idempotent`` (the shared inbox, ``self.store``);
    ``transactional``: the consumer declared ``mode: transactional``, its projection and its
    inbox record committed together in its own (in-memory) container ``self.container``."""

    def __init__(
        self, store: InMemoryConsumerStore | None = None, *, transactional: bool = False
    ) -> None:
        self.container = InMemoryTransactionalInbox("/orderId")
        [declared] = factories.DEPLOYMENT.consumers
        mode: ConsumerMode = "transactional" if transactional else "idempotent"
        deployment = dataclasses.replace(
            factories.DEPLOYMENT, consumers=(dataclasses.replace(declared, mode=mode),)
        )
        self.publisher = InMemoryPublisher(["integration-events", "payments"])
        self.inbox = InMemoryInbox()
        self.store = store or InMemoryConsumerStore("/orderId")
        self.runtime = self.assemble(deployment, {"order-status": self.container})
        app = func.FunctionApp()
        app.register_functions(blueprint(lambda: self.runtime))
        functions = {str(fn.get_function_name()): fn for fn in app.get_functions()}
        self.consume = functions["consume_order_status"].get_user_function()

    def assemble(
        self, deployment: Deployment, transactional: dict[str, InMemoryTransactionalInbox]
    ) -> Runtime:
        return Runtime.assemble(
            factories.settings(),
            deployment,
            self.publisher,
            InMemoryQuarantine(),
            inbox=self.inbox,
            consumer_stores={"order-status": self.store},
            transactional_inboxes=transactional,
        )

    def relayed(self, *documents: dict[str, Any]) -> list[OutgoingMessage]:
        """What the relay publishes to integration-events for these order documents."""
        before = len(self.publisher.delivered["integration-events"])
        self.runtime.relay("relay_orders").process(list(documents))
        return self.publisher.delivered["integration-events"][before:]

    def projection(self, order_id: str) -> dict[str, Any]:
        """The transactional consumer's document of one order."""
        [document] = [d for d in self.container.documents(order_id) if d["id"] == order_id]
        return document


def _received(message: OutgoingMessage, delivery_count: int = 1) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=message.body,
        application_properties=dict(message.application_properties),
        content_type=message.content_type,
        message_id=message.message_id,
        session_id=message.session_id,
        subject=message.subject,
        delivery_count=delivery_count,
        user_properties={},
    )


def test_consumer_function_message_projects_the_order_status() -> None:
    app = _Runtime()
    placed, upserted = app.relayed(
        factories.placed("o-1", "e-1"), factories.order("o-1", status="paid")
    )

    app.consume(_received(placed))
    app.consume(_received(upserted))

    document = app.store.partitions["o-1"]["o-1"]
    assert (document["status"], document["eventType"], document["orderId"]) == (
        "paid",
        "OrderUpserted",
        "o-1",
    )
    assert document["eventId"] == upserted.message_id


def test_consumer_function_redelivered_message_is_a_duplicate_with_no_second_effect() -> None:
    app = _Runtime()
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    [shipped] = app.relayed(factories.shipped("o-1", "e-2"))
    app.consume(_received(placed))
    app.consume(_received(shipped))

    app.consume(_received(placed, delivery_count=2))  # redelivered after the newer event

    assert app.store.partitions["o-1"]["o-1"]["status"] == "shipped"
    consumer = app.runtime.consumer("order-status")
    assert (getattr(consumer, "handled", None), getattr(consumer, "duplicates", None)) == (2, 1)


def test_consumer_function_older_event_never_seen_leaves_the_newer_status() -> None:
    app = _Runtime()
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    [shipped] = app.relayed(factories.shipped("o-1", "e-2"))

    app.consume(_received(shipped))
    app.consume(_received(placed))  # late: an older sequence

    assert app.store.partitions["o-1"]["o-1"]["status"] == "shipped"


def test_consumer_function_logs_one_line_per_message_with_ids_never_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _Runtime()
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    caplog.set_level(logging.INFO, logger="events.hosts")

    app.consume(_received(placed))
    app.consume(_received(placed, delivery_count=2))

    lines = [r.getMessage() for r in caplog.records if r.name == "events.hosts.consumers"]
    assert len(lines) == 2
    assert all(placed.message_id in line for line in lines)
    assert ["outcome=handled" in lines[0], "outcome=duplicate" in lines[1]] == [True, True]
    assert all("cust-9" not in r.getMessage() for r in caplog.records)


def test_consumer_function_unreadable_message_raises_permanent_and_logs_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _Runtime()
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    broken = ServiceBusMessage(
        body=b'{"orderId": "o-1", "customerId": "secret-customer"',
        application_properties=dict(placed.application_properties),
        content_type="application/json",
        message_id="m-broken",
        user_properties={},
    )
    caplog.set_level(logging.INFO, logger="events.hosts")

    with pytest.raises(UnreadableMessageError):
        app.consume(broken)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "m-broken" in errors[0]
    assert "consumer=order-status" in errors[0]
    assert all("secret-customer" not in r.getMessage() for r in caplog.records)
    assert app.store.partitions == {}


class _FailingStore:
    """A consumer container that is unavailable for its first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inner = InMemoryConsumerStore("/orderId")

    def partition(self, value: str) -> Documents:
        outer = self
        inner = self.inner.partition(value)

        class _Partition:
            def read(self, document_id: str) -> dict[str, Any] | None:
                return inner.read(document_id)

            def upsert(self, document: Mapping[str, Any]) -> None:
                if outer.failures > 0:
                    outer.failures -= 1
                    raise StoreUnavailableError("consumer store write: 503", status=503)
                inner.upsert(document)

        return _Partition()


def test_consumer_function_store_outage_raises_transient_then_redelivery_handles_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = _FailingStore(failures=2)
    app = _Runtime()
    app.runtime.consumer_stores = {"order-status": failing}
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    caplog.set_level(logging.INFO, logger="events.hosts")

    for delivery in (1, 2):
        with pytest.raises(StoreUnavailableError):
            app.consume(_received(placed, delivery_count=delivery))
    app.consume(_received(placed, delivery_count=3))

    assert failing.inner.partitions["o-1"]["o-1"]["status"] == "placed"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("events")
    ]
    assert len(warnings) == 1
    assert "consumer order-status" in warnings[0]
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 0


def test_consumer_function_transactional_commits_projection_and_inbox_record_together() -> None:
    app = _Runtime(transactional=True)
    placed, upserted = app.relayed(
        factories.placed("o-1", "e-1"), factories.order("o-1", status="paid")
    )

    app.consume(_received(placed))
    app.consume(_received(upserted))

    document = app.projection("o-1")
    assert (document["status"], document["orderId"], document["eventId"]) == (
        "paid",
        "o-1",
        upserted.message_id,
    )
    # One commit per event, each holding the projection and the event's inbox record.
    assert app.container.commits == 2
    assert len(app.container.documents("o-1")) == 3


def test_consumer_function_transactional_redelivery_is_a_duplicate_with_no_second_commit() -> None:
    app = _Runtime(transactional=True)
    [placed] = app.relayed(factories.placed("o-1", "e-1"))
    [shipped] = app.relayed(factories.shipped("o-1", "e-2"))
    app.consume(_received(placed))
    app.consume(_received(shipped))

    app.consume(_received(placed, delivery_count=2))

    assert app.projection("o-1")["status"] == "shipped"
    assert app.container.commits == 2
    consumer = app.runtime.consumer("order-status")
    assert (getattr(consumer, "handled", None), getattr(consumer, "duplicates", None)) == (2, 1)


def test_consumer_function_transactional_without_its_container_fails_naming_the_consumer() -> None:
    app = _Runtime(transactional=True)
    app.runtime = app.assemble(app.runtime.deployment, {})
    [placed] = app.relayed(factories.placed("o-1", "e-1"))

    with pytest.raises(SettingsError, match="order-status"):
        app.consume(_received(placed))
