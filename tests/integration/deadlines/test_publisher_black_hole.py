"""ServiceBusPublisher against a broker that accepts TCP and never speaks AMQP."""

from __future__ import annotations

import logging
import threading

import pytest
from azure.servicebus import ServiceBusClient

from events.adapters.servicebus import ServiceBusPublisher
from events.errors import PublishUnavailableError
from tests import factories
from tests.fixtures.blackhole import BlackHole

pytestmark = pytest.mark.integration

# Generous bound for the test itself; the publisher's own deadline is 1 s.
BOUND = 60.0


@pytest.fixture
def black_hole_client(black_hole: BlackHole) -> ServiceBusClient:
    client = ServiceBusClient.from_connection_string(
        f"Endpoint=sb://{black_hole.address};SharedAccessKeyName=k;SharedAccessKey=v;"
        "UseDevelopmentEmulator=true",
        retry_total=0,
    )
    return client


def _in_thread(call: object) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_publisher_publish_black_hole_raises_publish_unavailable_naming_endpoint(
    black_hole: BlackHole, black_hole_client: ServiceBusClient
) -> None:
    publisher = ServiceBusPublisher(black_hole_client, timeout=1.0, endpoint=black_hole.address)

    thread, errors = _in_thread(lambda: publisher.publish([factories.message()]))
    thread.join(BOUND)

    assert not thread.is_alive(), "publish did not return within the bound"
    assert len(errors) == 1
    assert isinstance(errors[0], PublishUnavailableError)
    assert black_hole.address in str(errors[0])
    assert "integration-events" in str(errors[0])


def test_publisher_repeated_failures_black_hole_warns_once(
    black_hole: BlackHole, black_hole_client: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = ServiceBusPublisher(black_hole_client, timeout=0.5, endpoint=black_hole.address)
    caplog.set_level(logging.INFO, logger="events.adapters.servicebus")

    def three_attempts() -> None:
        for _ in range(3):
            with pytest.raises(PublishUnavailableError):
                publisher.publish([factories.message()])

    thread, errors = _in_thread(three_attempts)
    thread.join(BOUND)

    assert not thread.is_alive()
    assert errors == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert black_hole.address in warnings[0]
    assert "integration-events" in warnings[0]


def test_publisher_stuck_destination_other_destination_not_blocked(
    black_hole: BlackHole, black_hole_client: ServiceBusClient
) -> None:
    publisher = ServiceBusPublisher(black_hole_client, timeout=1.0, endpoint=black_hole.address)
    started = threading.Event()

    def stuck_then_other() -> None:
        started.set()
        with pytest.raises(PublishUnavailableError):
            publisher.publish([factories.message("integration-events")])

    first, first_errors = _in_thread(stuck_then_other)
    started.wait(BOUND)
    second, second_errors = _in_thread(lambda: publisher.publish([factories.message("payments")]))
    first.join(BOUND)
    second.join(BOUND)

    assert not first.is_alive()
    assert not second.is_alive()
    assert first_errors == []
    # The other destination got its own attempt (and its own error), not "still in progress".
    assert len(second_errors) == 1
    assert "payments" in str(second_errors[0])
    assert "in progress" not in str(second_errors[0])


def test_publisher_close_during_hung_send_raises_publish_unavailable(
    black_hole: BlackHole, black_hole_client: ServiceBusClient
) -> None:
    publisher = ServiceBusPublisher(black_hole_client, timeout=BOUND * 10)
    thread, errors = _in_thread(lambda: publisher.publish([factories.message()]))
    for _ in range(int(BOUND / 0.05)):  # until the client is connected (bounded)
        if black_hole.accepted or not thread.is_alive():
            break
        thread.join(0.05)

    publisher.close()
    thread.join(BOUND)

    assert not thread.is_alive(), "close() did not end the hung publish"
    assert len(errors) == 1
    assert isinstance(errors[0], PublishUnavailableError)
    assert "closed" in str(errors[0])
