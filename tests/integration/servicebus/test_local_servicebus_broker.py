"""The local broker driven by the real azure-servicebus SDK over loopback."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

import pytest
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus import ServiceBusReceiver as Receiver
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusConnectionError,
    ServiceBusError,
    ServiceBusServerBusyError,
    SessionCannotBeLockedError,
)
from azure.servicebus.management import CorrelationRuleFilter, ServiceBusAdministrationClient

from devstack.servicebus import Faults, LocalServiceBus, UnsupportedTopologyError
from events.deployment.topology import DEFAULT_TOPOLOGY
from tests.commands import first_line_then_sigterm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOPIC = "integration-events"
ALL = "all"  # requires sessions, no rules
PLACED = "orders-placed"  # no sessions, subject = OrderPlaced, maxDeliveryCount 5
ORDER_STATUS = "order-status"  # the declared consumer's: sessions, the order events
QUEUE = "payments"  # requires sessions
REPO = Path(__file__).resolve().parents[3]


def _receive(receiver: Receiver, count: int, rounds: int = 10) -> list[ServiceBusReceivedMessage]:
    """Up to ``count`` messages, in at most ``rounds`` bounded receive calls."""
    received: list[ServiceBusReceivedMessage] = []
    for _ in range(rounds):
        if len(received) >= count:
            break
        batch = receiver.receive_messages(max_message_count=count - len(received), max_wait_time=2)
        if not batch:
            break
        received.extend(batch)
    return received


def _body(message: ServiceBusReceivedMessage) -> bytes:
    return b"".join(message.body)


def _send(client: ServiceBusClient, *messages: ServiceBusMessage, entity: str = TOPIC) -> None:
    sender = client.get_queue_sender(entity) if entity == QUEUE else client.get_topic_sender(entity)
    with sender:
        sender.send_messages(list(messages))


def _placed(i: int, session: str = "s1") -> ServiceBusMessage:
    return ServiceBusMessage(
        f"body-{i}".encode(), message_id=f"m-{i}", subject="OrderPlaced", session_id=session
    )


def _topology_file(tmp_path: Path, edit: dict[str, object], sub: str = PLACED) -> Path:
    raw = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    for subscription in raw["serviceBus"]["topics"][0]["subscriptions"]:
        if subscription["name"] == sub:
            subscription.update(edit)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- send / receive


def test_message_every_property_read_back_unchanged(servicebus_client: ServiceBusClient) -> None:
    sent = ServiceBusMessage(
        b"\x00\x01payload",
        message_id="evt-1",
        session_id="order-42",
        subject="OrderPlaced",
        content_type="application/json",
        correlation_id="corr-7",
        application_properties={"cloudEvents:id": "evt-1", "cloudEvents:source": "/orders"},
    )
    _send(servicebus_client, sent)

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        (got,) = _receive(receiver, 1)
        locked_until = got.locked_until_utc  # the SDK clears it once settled
        receiver.complete_message(got)

    assert got.message_id == "evt-1"
    assert got.session_id == "order-42"
    assert got.subject == "OrderPlaced"
    assert got.content_type == "application/json"
    assert got.correlation_id == "corr-7"
    assert got.application_properties == {
        b"cloudEvents:id": b"evt-1",
        b"cloudEvents:source": b"/orders",
    }
    assert _body(got) == b"\x00\x01payload"
    assert got.delivery_count == 0
    assert got.sequence_number == 1
    assert got.enqueued_time_utc is not None
    assert locked_until is not None


def test_message_batch_of_50_one_transfer_all_delivered_in_order(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    with servicebus_client.get_topic_sender(TOPIC) as sender:
        batch = sender.create_message_batch()
        for i in range(50):
            batch.add_message(_placed(i))
        sender.send_messages(batch)

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        got = _receive(receiver, 50, rounds=30)
        for message in got:
            receiver.complete_message(message)

    assert local_servicebus.stats.transfers[TOPIC] == 1
    assert local_servicebus.stats.messages[TOPIC] == 50
    assert [m.message_id for m in got] == [f"m-{i}" for i in range(50)]


def test_sender_batch_limit_is_the_topology_message_size(
    servicebus_client: ServiceBusClient,
) -> None:
    with servicebus_client.get_topic_sender(TOPIC) as sender:
        assert sender.create_message_batch().max_size_in_bytes == 256 * 1024


def test_sender_message_over_size_limit_raises_message_size_exceeded(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    with (
        servicebus_client.get_topic_sender(TOPIC) as sender,
        pytest.raises(MessageSizeExceededError),
    ):
        sender.send_messages(ServiceBusMessage(b"x" * (300 * 1024), session_id="s1"))

    assert local_servicebus.stats.messages.get(TOPIC, 0) == 0
    assert local_servicebus.stats.rejected[TOPIC] == 1


def test_topic_same_message_id_twice_delivered_once_duplicate_counted(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    _send(servicebus_client, _placed(1))
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        got = _receive(receiver, 1)
        more = receiver.receive_messages(max_wait_time=0.5)

    assert [m.message_id for m in got] == ["m-1"]
    assert more == []
    assert local_servicebus.stats.duplicates[TOPIC] == 1
    assert local_servicebus.stats.messages[TOPIC] == 1


def test_topic_fan_out_all_gets_everything_orders_placed_only_order_placed(
    servicebus_client: ServiceBusClient,
) -> None:
    shipped = ServiceBusMessage(b"s", message_id="m-2", subject="OrderShipped", session_id="s1")
    _send(servicebus_client, _placed(1), shipped)

    with servicebus_client.get_subscription_receiver(TOPIC, ALL, session_id="s1") as receiver:
        everything = _receive(receiver, 2)
    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        placed = _receive(receiver, 1)
        more = receiver.receive_messages(max_wait_time=0.5)

    assert [m.message_id for m in everything] == ["m-1", "m-2"]
    assert [m.message_id for m in placed] == ["m-1"]
    assert more == []


# --------------------------------------------------------------------------- sessions


def test_session_receiver_each_session_fifo(servicebus_client: ServiceBusClient) -> None:
    _send(servicebus_client, *(_placed(i, session="a" if i % 2 else "b") for i in range(10)))

    by_session: dict[str, list[str]] = {}
    for session in ("a", "b"):
        with servicebus_client.get_subscription_receiver(
            TOPIC, ALL, session_id=session
        ) as receiver:
            got = _receive(receiver, 5)
            for message in got:
                receiver.complete_message(message)
            by_session[session] = [m.message_id or "" for m in got]

    assert by_session == {
        "a": ["m-1", "m-3", "m-5", "m-7", "m-9"],
        "b": ["m-0", "m-2", "m-4", "m-6", "m-8"],
    }


def test_session_receiver_next_available_locks_the_waiting_session(
    servicebus_client: ServiceBusClient,
) -> None:
    _send(servicebus_client, _placed(1, session="only"), _placed(2, session="only"))

    with servicebus_client.get_subscription_receiver(
        TOPIC, ALL, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5
    ) as receiver:
        got = _receive(receiver, 2)
        session_id = receiver.session.session_id
        receiver.session.set_state(b"checkpoint")
        state = receiver.session.get_state()
        receiver.session.renew_lock()

    assert session_id == "only"
    assert [m.message_id for m in got] == ["m-1", "m-2"]
    assert state == b"checkpoint"


def test_session_receiver_locked_session_refused_to_second_receiver(
    servicebus_client: ServiceBusClient,
) -> None:
    _send(servicebus_client, _placed(1, session="held"))

    with servicebus_client.get_subscription_receiver(TOPIC, ALL, session_id="held") as first:
        assert len(_receive(first, 1)) == 1
        second = servicebus_client.get_subscription_receiver(TOPIC, ALL, session_id="held")
        with second, pytest.raises(SessionCannotBeLockedError):
            second.receive_messages(max_wait_time=0.5)


def test_session_queue_message_without_session_id_refused(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    with pytest.raises(ServiceBusError, match="SessionId was not set"):
        _send(servicebus_client, ServiceBusMessage(b"x", message_id="p-1"), entity=QUEUE)

    assert local_servicebus.stats.rejected[QUEUE] == 1


def test_session_subscription_message_without_session_id_dead_lettered_there(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    # Service Bus accepts the send to the topic; only the session subscription's copy is
    # dead-lettered (the non-session subscription receives it normally).
    _send(servicebus_client, ServiceBusMessage(b"x", message_id="m-1", subject="OrderPlaced"))

    with servicebus_client.get_subscription_receiver(
        TOPIC, ALL, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        (dead,) = _receive(receiver, 1)
    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        placed = _receive(receiver, 1)

    assert dead.dead_letter_reason == "Session id is null."
    assert [m.message_id for m in placed] == ["m-1"]
    assert local_servicebus.stats.dead_lettered[f"{TOPIC}/Subscriptions/{ALL}"] == 1


def test_queue_session_messages_received_by_session(servicebus_client: ServiceBusClient) -> None:
    _send(servicebus_client, _placed(1, session="pay-1"), entity=QUEUE)

    with servicebus_client.get_queue_receiver(QUEUE, session_id="pay-1") as receiver:
        (got,) = _receive(receiver, 1)
        receiver.complete_message(got)

    assert got.session_id == "pay-1"


# --------------------------------------------------------------------------- settlement


def test_receiver_completed_message_not_redelivered(servicebus_client: ServiceBusClient) -> None:
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        (got,) = _receive(receiver, 1)
        receiver.complete_message(got)
        again = receiver.receive_messages(max_wait_time=0.5)

    assert again == []


def test_receiver_abandoned_message_redelivered_delivery_count_plus_one(
    servicebus_client: ServiceBusClient,
) -> None:
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        (first,) = _receive(receiver, 1)
        receiver.abandon_message(first)
        (second,) = _receive(receiver, 1)
        receiver.complete_message(second)

    assert second.message_id == first.message_id
    assert (first.delivery_count, second.delivery_count) == (0, 1)


def test_receiver_dead_lettered_message_in_dead_letter_queue_with_reason(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        (got,) = _receive(receiver, 1)
        receiver.dead_letter_message(got, reason="Poison", error_description="cannot parse")
        remaining = receiver.receive_messages(max_wait_time=0.5)
    with servicebus_client.get_subscription_receiver(
        TOPIC, PLACED, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        (dead,) = _receive(receiver, 1)
        receiver.complete_message(dead)

    assert remaining == []
    assert dead.message_id == "m-1"
    assert dead.dead_letter_reason == "Poison"
    assert dead.dead_letter_error_description == "cannot parse"
    assert dead.dead_letter_source == f"{TOPIC}/Subscriptions/{PLACED}"
    assert local_servicebus.stats.dead_lettered[f"{TOPIC}/Subscriptions/{PLACED}"] == 1


def test_receiver_abandoned_max_delivery_count_times_dead_lettered(
    servicebus_client: ServiceBusClient,
) -> None:
    _send(servicebus_client, _placed(1))

    counts: list[int | None] = []
    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        for _ in range(5):  # maxDeliveryCount of orders-placed
            (got,) = _receive(receiver, 1)
            counts.append(got.delivery_count)
            receiver.abandon_message(got)
        after = receiver.receive_messages(max_wait_time=0.5)
    with servicebus_client.get_subscription_receiver(
        TOPIC, PLACED, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        (dead,) = _receive(receiver, 1)

    assert counts == [0, 1, 2, 3, 4]
    assert after == []
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


def test_receiver_lock_not_settled_in_time_message_redelivered(tmp_path: Path) -> None:
    topology = _topology_file(tmp_path, {"lockDuration": "PT1S"})
    with (
        LocalServiceBus(topology) as bus,
        ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as client,
    ):
        _send(client, _placed(1))
        with client.get_subscription_receiver(TOPIC, PLACED) as receiver:
            (first,) = _receive(receiver, 1)
            # no settlement: the 1 s lock runs out and the broker hands the message out again
            (second,) = _receive(receiver, 1, rounds=5)

    assert second.message_id == first.message_id
    assert second.delivery_count == 1


def test_receiver_renew_lock_and_peek_answered(servicebus_client: ServiceBusClient) -> None:
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        peeked = receiver.peek_messages(max_message_count=5)
        (got,) = _receive(receiver, 1)
        renewed = receiver.renew_message_lock(got)
        receiver.complete_message(got)

    assert [m.message_id for m in peeked] == ["m-1"]
    assert renewed is not None


def test_receiver_receive_and_delete_message_gone(servicebus_client: ServiceBusClient) -> None:
    _send(servicebus_client, _placed(1))

    with servicebus_client.get_subscription_receiver(
        TOPIC, PLACED, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        got = _receive(receiver, 1)
    with servicebus_client.get_subscription_receiver(TOPIC, PLACED) as receiver:
        again = receiver.receive_messages(max_wait_time=0.5)

    assert [m.message_id for m in got] == ["m-1"]
    assert again == []


# --------------------------------------------------------------------------- unknown entities


def test_sender_unknown_queue_raises_entity_not_found(servicebus_client: ServiceBusClient) -> None:
    with (
        servicebus_client.get_queue_sender("no-such-queue") as sender,
        pytest.raises(MessagingEntityNotFoundError, match="no-such-queue"),
    ):
        sender.send_messages(ServiceBusMessage(b"x"))


def test_receiver_unknown_subscription_raises_entity_not_found(
    servicebus_client: ServiceBusClient,
) -> None:
    with (
        servicebus_client.get_subscription_receiver(TOPIC, "no-such-sub") as receiver,
        pytest.raises(MessagingEntityNotFoundError, match="no-such-sub"),
    ):
        receiver.receive_messages(max_wait_time=0.5)


def test_broker_unsupported_sql_filter_refused_at_construction(tmp_path: Path) -> None:
    rule = {"name": "r", "filter": {"type": "sql", "expression": "amount > 10"}}
    topology = _topology_file(tmp_path, {"rules": [rule]})

    with pytest.raises(UnsupportedTopologyError, match="amount > 10"):
        LocalServiceBus(topology)


# --------------------------------------------------------------------------- faults


def test_sender_connection_dropped_without_retries_raises_connection_error(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    local_servicebus.faults.drop_connection_after(1)
    with servicebus_client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(_placed(1))
        with pytest.raises(ServiceBusConnectionError):
            sender.send_messages(_placed(2))

    stats = local_servicebus.stats
    assert stats.transfers[TOPIC] == 2
    assert stats.messages[TOPIC] == 1
    assert stats.dropped_connections == 1


def test_sender_connection_dropped_with_retries_resent_once(
    local_servicebus: LocalServiceBus,
) -> None:
    local_servicebus.faults.drop_connection_after(0)
    client = ServiceBusClient.from_connection_string(
        local_servicebus.connection_string, retry_total=2, retry_backoff_factor=0.05
    )
    with client, client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(_placed(1))

    stats = local_servicebus.stats
    assert stats.transfers[TOPIC] == 2
    assert stats.messages[TOPIC] == 1


def test_sender_server_busy_without_retries_raises_server_busy(
    local_servicebus: LocalServiceBus, servicebus_client: ServiceBusClient
) -> None:
    local_servicebus.faults.server_busy(1)
    with servicebus_client.get_topic_sender(TOPIC) as sender:
        with pytest.raises(ServiceBusServerBusyError):
            sender.send_messages(_placed(1))
        sender.send_messages(_placed(2))

    assert local_servicebus.stats.messages[TOPIC] == 1
    assert local_servicebus.stats.rejected[TOPIC] == 1


def test_sender_transfer_delay_fault_still_accepted() -> None:
    with (
        LocalServiceBus(faults=Faults(transfer_delay=0.3)) as bus,
        ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as client,
    ):
        _send(client, _placed(1))
        assert bus.stats.messages[TOPIC] == 1


# --------------------------------------------------------------------------- lifecycle


def test_broker_stopped_thread_gone() -> None:
    bus = LocalServiceBus().start()
    assert bus.running

    bus.stop()

    assert not bus.running
    assert not [t for t in threading.enumerate() if t.name == "local-servicebus"]


def test_cli_sigterm_after_ready_prints_connection_string_exits_0() -> None:
    line, code = first_line_then_sigterm("devstack.servicebus", "--port", "0")

    assert line.startswith("Endpoint=sb://127.0.0.1:")
    assert line.strip().endswith("UseDevelopmentEmulator=true;")
    assert code == 0


# --------------------------------------------------------------------------- administration
def test_admin_endpoint_default_topology_describes_declared_entities(
    servicebus_admin_client: ServiceBusAdministrationClient,
) -> None:
    topic = servicebus_admin_client.get_topic(TOPIC)
    subscriptions = {s.name: s for s in servicebus_admin_client.list_subscriptions(TOPIC)}
    rules = list(servicebus_admin_client.list_rules(TOPIC, PLACED))

    assert topic.requires_duplicate_detection is True
    assert topic.duplicate_detection_history_time_window == datetime.timedelta(minutes=30)
    assert sorted(subscriptions) == sorted([ALL, PLACED, ORDER_STATUS])
    assert subscriptions[ORDER_STATUS].requires_session is True
    assert subscriptions[PLACED].max_delivery_count == 5
    assert subscriptions[ALL].requires_session is True
    assert [r.name for r in rules] == ["placed-only"]
    assert isinstance(rules[0].filter, CorrelationRuleFilter)
    assert rules[0].filter.label == "OrderPlaced"
    assert servicebus_admin_client.get_queue(QUEUE).requires_session is True


def test_admin_connection_string_differs_from_amqp_one_only_by_port(
    local_servicebus: LocalServiceBus,
) -> None:
    amqp = local_servicebus.connection_string.replace(str(local_servicebus.port), "PORT")
    admin = local_servicebus.admin_connection_string.replace(
        str(local_servicebus.admin_port), "PORT"
    )

    assert admin == amqp
    assert local_servicebus.admin_port != local_servicebus.port
