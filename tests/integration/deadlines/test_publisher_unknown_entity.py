"""A destination that does not exist: a named configuration problem, never a silent stall."""

from __future__ import annotations

import logging

import pytest
from azure.servicebus import ServiceBusClient

from devstack.servicebus import LocalServiceBus
from events.adapters.servicebus import ServiceBusPublisher
from events.errors import PublishUnavailableError
from tests import factories

pytestmark = pytest.mark.integration


def test_publisher_unknown_entity_raises_naming_entity_and_settings_warns_once(
    local_servicebus: LocalServiceBus,
    servicebus_client: ServiceBusClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = ServiceBusPublisher(servicebus_client, timeout=30.0)
    caplog.set_level(logging.INFO, logger="events.adapters.servicebus")

    errors = []
    for _ in range(3):
        with pytest.raises(PublishUnavailableError) as raised:
            publisher.publish([factories.message("no-such-topic")])
        errors.append(str(raised.value))
    publisher.publish([factories.message("integration-events")])

    assert all("no-such-topic" in e and "routes in the declaration" in e for e in errors)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "entity no-such-topic" in warnings[0]
    assert "does not exist" in warnings[0]
    assert local_servicebus.stats.messages.get("integration-events", 0) == 1
