"""One contract, two publishers: the in-memory broker and the Service Bus adapter against the
local broker with the real azure-servicebus SDK. Whatever the relay relies on is pinned here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from azure.servicebus import ServiceBusClient
from opentelemetry.trace import SpanKind, StatusCode

from devstack.servicebus import LocalServiceBus
from events.adapters.servicebus import ServiceBusPublisher
from events.core.messages import OutgoingMessage
from events.core.publisher import InMemoryPublisher, Publisher
from events.errors import EventTooLargeError, PublishUnavailableError
from events.fencing import FencedError, fenced
from tests.fixtures.telemetry import Recorded

Delivered = tuple[str, str, str, str, bytes, dict[str, str]]


@dataclass
class Harness:
    publisher: Publisher
    read: Callable[[str, list[str]], list[Delivered]]
    sends: Callable[[], int]


def _memory() -> Iterator[Harness]:
    publisher = InMemoryPublisher(["integration-events", "payments"])

    def read(destination: str, sessions: list[str]) -> list[Delivered]:
        return [
            (
                m.message_id,
                m.session_id,
                m.subject,
                m.content_type,
                m.body,
                dict(m.application_properties),
            )
            for session in sessions
            for m in publisher.delivered[destination]
            if m.session_id == session
        ]

    yield Harness(publisher, read, lambda: publisher.sends)


def _drain(client: ServiceBusClient, destination: str, sessions: list[str]) -> list[Delivered]:
    out: list[Delivered] = []
    for session in sessions:
        if destination == "integration-events":
            receiver = client.get_subscription_receiver(
                destination, "all", session_id=session, max_wait_time=1
            )
        else:
            receiver = client.get_queue_receiver(destination, session_id=session, max_wait_time=1)
        with receiver:
            while batch := receiver.receive_messages(max_message_count=100, max_wait_time=1):
                for message in batch:
                    properties = {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else str(v)
                        )
                        for k, v in (message.application_properties or {}).items()
                    }
                    out.append(
                        (
                            str(message.message_id),
                            str(message.session_id),
                            str(message.subject),
                            str(message.content_type),
                            b"".join(message.body),
                            properties,
                        )
                    )
                    receiver.complete_message(message)
    return out


def _servicebus() -> Iterator[Harness]:
    with LocalServiceBus() as broker:
        client = ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0)
        publisher = ServiceBusPublisher(client)
        with client:
            yield Harness(
                publisher,
                lambda destination, sessions: _drain(client, destination, sessions),
                lambda: sum(broker.stats.transfers.values()),
            )
            publisher.close()


@pytest.fixture(params=["memory", pytest.param("servicebus", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from (_memory() if request.param == "memory" else _servicebus())


def _message(
    message_id: str, session: str, size: int = 10, destination: str = "integration-events"
) -> OutgoingMessage:
    return OutgoingMessage(
        destination=destination,
        message_id=message_id,
        session_id=session,
        subject="OrderPlaced",
        content_type="application/json",
        body=b'{"pad":"' + b"x" * size + b'"}',
        application_properties={"cloudEvents:id": message_id, "cloudEvents:type": "OrderPlaced"},
    )


def test_publisher_publish_delivers_every_message_with_its_properties(harness: Harness) -> None:
    messages = [_message(f"m-{n}", f"s-{n % 2}") for n in range(6)]

    harness.publisher.publish(messages)

    delivered = sorted(harness.read("integration-events", ["s-0", "s-1"]))
    assert delivered == sorted(
        (
            m.message_id,
            m.session_id,
            m.subject,
            m.content_type,
            m.body,
            dict(m.application_properties),
        )
        for m in messages
    )


def test_publisher_keeps_order_within_a_session(harness: Harness) -> None:
    messages = [_message(f"m-{n}", f"s-{n % 3}") for n in range(30)]

    harness.publisher.publish(messages)

    delivered = harness.read("integration-events", ["s-0", "s-1", "s-2"])
    for session in ("s-0", "s-1", "s-2"):
        got = [d[0] for d in delivered if d[1] == session]
        assert got == [m.message_id for m in messages if m.session_id == session]


def test_publisher_republishing_the_same_ids_delivers_each_once(harness: Harness) -> None:
    messages = [_message(f"m-{n}", "s") for n in range(5)]

    harness.publisher.publish(messages[:3])
    harness.publisher.publish(messages)

    assert [d[0] for d in harness.read("integration-events", ["s"])] == [f"m-{n}" for n in range(5)]


def test_publisher_many_small_messages_take_one_send(harness: Harness) -> None:
    before = harness.sends()

    sends = harness.publisher.publish([_message(f"m-{n}", "s") for n in range(50)])

    assert sends == 1
    assert harness.sends() - before == 1


def test_publisher_messages_beyond_one_batch_take_the_fewest_sends(harness: Harness) -> None:
    before = harness.sends()

    sends = harness.publisher.publish([_message(f"m-{n}", "s", size=100_000) for n in range(5)])

    assert sends == 3  # two 100 kB messages fit a 256 kB batch
    assert harness.sends() - before == 3
    assert len(harness.read("integration-events", ["s"])) == 5


def test_publisher_each_destination_gets_its_own_messages(harness: Harness) -> None:
    harness.publisher.publish(
        [_message("a", "s"), _message("b", "s", destination="payments"), _message("c", "s")]
    )

    assert [d[0] for d in harness.read("integration-events", ["s"])] == ["a", "c"]
    assert [d[0] for d in harness.read("payments", ["s"])] == ["b"]


def test_publisher_check_refuses_a_message_over_the_size_limit(harness: Harness) -> None:
    harness.publisher.check(_message("ok", "s", size=1000))

    with pytest.raises(EventTooLargeError):
        harness.publisher.check(_message("huge", "s", size=300_000))


def test_publisher_check_returns_an_equal_message_that_publishes_as_given(
    harness: Harness,
) -> None:
    messages = [_message(f"m-{n}", "s", size=100_000 * (n % 2)) for n in range(8)]

    checked = [harness.publisher.check(m) for m in messages]
    sends = harness.publisher.publish(checked)

    assert checked == messages
    assert sends == 2  # two 100 kB messages per 256 kB batch
    assert [d[0] for d in harness.read("integration-events", ["s"])] == [
        m.message_id for m in messages
    ]


def test_publisher_unknown_destination_is_a_transient_failure(harness: Harness) -> None:
    with pytest.raises(PublishUnavailableError):
        harness.publisher.publish([_message("x", "s", destination="no-such-topic")])


def test_publisher_traces_one_send_span_per_send_linked_to_each_writer(
    harness: Harness, recorded: Recorded
) -> None:
    writers = [f"00-{n + 1:032x}-{n + 1:016x}-01" for n in range(3)]
    plain = [_message(f"m-{n}", "s-0", size=200_000) for n in range(6)]
    messages = [
        OutgoingMessage(
            m.destination,
            m.message_id,
            m.session_id,
            m.subject,
            m.content_type,
            m.body,
            {**m.application_properties, "cloudEvents:traceparent": writers[n % 3]},
        )
        for n, m in enumerate(plain)
    ]

    sends = harness.publisher.publish(messages)

    spans = recorded.spans("send ")
    assert len(spans) == sends > 1
    counted = [(s.attributes or {}).get("messaging.batch.message_count", 1) for s in spans]
    assert sum(c for c in counted if isinstance(c, int)) == len(messages)
    for span in spans:
        assert span.kind is SpanKind.PRODUCER
        assert (span.attributes or {})["messaging.destination.name"] == "integration-events"
        assert span.status.status_code is StatusCode.UNSET
    linked = {link.context.trace_id for s in spans for link in s.links}
    assert linked == {int(w.split("-")[1], 16) for w in writers}


def test_publisher_checks_the_fence_once_per_send_right_before_it(harness: Harness) -> None:
    checks: list[int] = []
    messages = [_message(f"m-{n}", "s", size=200_000) for n in range(3)]

    with fenced(lambda: checks.append(harness.sends())):
        sends = harness.publisher.publish(messages)

    # Each check saw the sends before it, and none of its own: it came first.
    assert checks == list(range(checks[0], checks[0] + sends))
    assert sends > 1
    assert [d[0] for d in harness.read("integration-events", ["s"])] == ["m-0", "m-1", "m-2"]


def test_publisher_fenced_out_sends_nothing_more_and_raises_fenced_error(
    harness: Harness,
) -> None:
    allowed = 1

    def fence() -> None:
        nonlocal allowed
        if allowed == 0:
            raise FencedError("the lease expired")
        allowed -= 1

    messages = [_message(f"m-{n}", "s", size=200_000) for n in range(3)]

    with fenced(fence), pytest.raises(FencedError):
        harness.publisher.publish(messages)

    assert [d[0] for d in harness.read("integration-events", ["s"])] == ["m-0"]
    # Outside a fence, the same publisher sends as before (a FencedError broke nothing).
    before = harness.sends()
    assert harness.publisher.publish(messages[1:]) == harness.sends() - before > 0
