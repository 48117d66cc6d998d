"""ServiceBusPublisher.probe: how a start-up check reads the SDK's refusals (a fake SDK client
injected; the real broker cases are in tests/integration/deadlines)."""

from __future__ import annotations

from typing import cast

import pytest
from azure.servicebus import ServiceBusClient
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusConnectionError,
)

from events.adapters.servicebus import ServiceBusPublisher
from events.errors import PublishUnavailableError, SettingsError


class _RefusingSender:
    def __init__(self, error: Exception) -> None:
        self._error = error

    def create_message_batch(self) -> object:
        raise self._error

    def close(self) -> None:
        pass


class _Client:
    """What the publisher uses of ServiceBusClient: a sender per entity."""

    fully_qualified_namespace = "ns.example:5671"

    def __init__(self, error: Exception) -> None:
        self._error = error

    def get_topic_sender(self, name: str) -> _RefusingSender:
        return _RefusingSender(self._error)


def _publisher(error: Exception) -> ServiceBusPublisher:
    return ServiceBusPublisher(
        cast(ServiceBusClient, _Client(error)), timeout=30.0, setting="RELAY_SERVICEBUS"
    )


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (MessagingEntityNotFoundError(message="put-token 404"), "routes in the declaration"),
        (ServiceBusAuthenticationError(message="put-token 401"), "RELAY_SERVICEBUS"),
    ],
)
def test_publisher_probe_refused_entity_or_credentials_raises_settings_error(
    error: Exception, named: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        _publisher(error).probe("payments")

    assert "payments" in str(raised.value)
    assert "ns.example:5671" in str(raised.value)
    assert named in str(raised.value)


def test_publisher_probe_connection_failure_stays_transient() -> None:
    with pytest.raises(PublishUnavailableError, match="entity payments"):
        _publisher(ServiceBusConnectionError(message="refused")).probe("payments")
