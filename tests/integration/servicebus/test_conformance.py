"""The local broker against the behaviour the azure-servicebus SDK documents, one test each.

Written from the SDK's documentation and its official samples (``samples/sync_samples``:
schedule_messages_and_cancellation, receive_deferred_message_queue, session_send_receive,
list_sessions, auto_lock_renew, send_and_receive_amqp_annotated_message, mgmt_queue, mgmt_topic,
mgmt_subscription, mgmt_rule), not from the broker's code: each test is what a user of the SDK
sees against Service Bus.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
)
from azure.servicebus import ServiceBusReceiver as Receiver
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from azure.servicebus.exceptions import (
    OperationTimeoutError,
    ServiceBusError,
    SessionCannotBeLockedError,
)
from azure.servicebus.management import (
    ServiceBusAdministrationClient,
    SqlRuleAction,
    SqlRuleFilter,
)

from devstack.servicebus import LocalServiceBus
from events.deployment.topology import DEFAULT_TOPOLOGY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUEUE = "conformance-queue"
SESSION_QUEUE = "conformance-session-queue"
TOPIC = "conformance-topic"
SUBSCRIPTION = "conformance-sub"
# Long enough that a renewal on a loaded machine lands before the lock expires: the SDK's
# AutoLockRenewer renews near expiry, and a 5 s lock failed once under a full test run.
LOCK_SECONDS = 12
ATTACH_CALLBACK_ERROR = "Callback for link attach raised error"


def _delivery(requires_session: bool) -> dict[str, object]:
    return {
        "requiresSession": requires_session,
        "maxDeliveryCount": 10,
        "lockDuration": f"PT{LOCK_SECONDS}S",
        "deadLetteringOnMessageExpiration": True,
        "defaultMessageTimeToLive": "P14D",
    }


def _entity(name: str) -> dict[str, object]:
    return {
        "name": name,
        "requiresDuplicateDetection": False,
        "duplicateDetectionHistoryTimeWindow": "PT10M",
        "defaultMessageTimeToLive": "P14D",
    }


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[LocalServiceBus]:
    """A broker with a plain queue, a session queue and a topic, locks of a few seconds."""
    raw = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    raw["serviceBus"] = {
        "maxMessageSizeKb": 256,
        "defaultDestination": QUEUE,
        "routes": {},
        "queues": [
            {**_entity(QUEUE), **_delivery(False)},
            {**_entity(SESSION_QUEUE), **_delivery(True)},
        ],
        "topics": [
            {**_entity(TOPIC), "subscriptions": [{"name": SUBSCRIPTION, **_delivery(False)}]}
        ],
    }
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with LocalServiceBus(path) as broker:
        yield broker


@pytest.fixture
def client(bus: LocalServiceBus) -> Iterator[ServiceBusClient]:
    with ServiceBusClient.from_connection_string(bus.connection_string, retry_total=0) as sdk:
        yield sdk


@pytest.fixture
def admin(bus: LocalServiceBus) -> Iterator[ServiceBusAdministrationClient]:
    with ServiceBusAdministrationClient.from_connection_string(
        bus.admin_connection_string, connection_verify=False
    ) as sdk:
        yield sdk


def _send(client: ServiceBusClient, *messages: ServiceBusMessage, queue: str = QUEUE) -> None:
    with client.get_queue_sender(queue) as sender:
        sender.send_messages(list(messages))


def _receive(receiver: Receiver, count: int, wait: float = 3) -> list[ServiceBusReceivedMessage]:
    received: list[ServiceBusReceivedMessage] = []
    for _ in range(5):
        if len(received) >= count:
            break
        batch = receiver.receive_messages(
            max_message_count=count - len(received), max_wait_time=wait
        )
        if not batch:
            break
        received.extend(batch)
    return received


def _text(message: ServiceBusReceivedMessage) -> str:
    return b"".join(message.body).decode()


def _number(message: ServiceBusReceivedMessage) -> int:
    assert message.sequence_number is not None
    return message.sequence_number


def _utc_in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


# --------------------------------------------------------------------------- session attach
def test_next_available_session_none_waiting_raises_operation_timeout_cleanly(
    client: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with (
        pytest.raises(OperationTimeoutError),
        client.get_queue_receiver(
            SESSION_QUEUE, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2
        ) as receiver,
    ):
        receiver.receive_messages(max_wait_time=1)

    assert ATTACH_CALLBACK_ERROR not in caplog.text


def test_session_receiver_session_held_elsewhere_raises_cannot_be_locked_cleanly(
    client: ServiceBusClient, caplog: pytest.LogCaptureFixture
) -> None:
    _send(client, ServiceBusMessage("m", session_id="s1"), queue=SESSION_QUEUE)
    caplog.set_level(logging.WARNING)
    with client.get_queue_receiver(SESSION_QUEUE, session_id="s1") as holder:
        assert len(_receive(holder, 1)) == 1
        with (
            pytest.raises(SessionCannotBeLockedError),
            client.get_queue_receiver(SESSION_QUEUE, session_id="s1") as second,
        ):
            second.receive_messages(max_wait_time=1)

    assert ATTACH_CALLBACK_ERROR not in caplog.text


# --------------------------------------------------------------------------- lock renewal
def test_auto_lock_renewer_several_messages_locks_outlive_lock_duration(
    client: ServiceBusClient,
) -> None:
    _send(client, *(ServiceBusMessage(f"m{i}") for i in range(5)))
    failures: list[str] = []
    renewer = AutoLockRenewer(max_workers=5)
    with client.get_queue_receiver(QUEUE) as receiver:
        messages = _receive(receiver, 5)
        for message in messages:
            renewer.register(
                receiver,
                message,
                max_lock_renewal_duration=60,
                on_lock_renew_failure=lambda _renewable, error: failures.append(repr(error)),
            )
        # Past two lock durations: only renewals keep the locks.
        renewer_wait = 2 * LOCK_SECONDS + 1
        receiver.receive_messages(max_message_count=1, max_wait_time=renewer_wait)
        # Renewals stop (in-flight ones finish) before settling: a renewal racing a completion
        # finds the lock gone, as on Azure. Completing then needs the locks renewals kept.
        renewer.close()
        for message in messages:
            receiver.complete_message(message)

    assert len(messages) == 5
    assert failures == []


def test_renew_message_lock_several_in_a_row_each_extends_its_lock(
    client: ServiceBusClient,
) -> None:
    _send(client, *(ServiceBusMessage(f"m{i}") for i in range(3)))
    with client.get_queue_receiver(QUEUE) as receiver:
        messages = _receive(receiver, 3)
        before = [m.locked_until_utc for m in messages]
        renewed = [receiver.renew_message_lock(m) for m in messages]
        for message in messages:
            receiver.complete_message(message)

    assert all(
        new is not None and old is not None and new >= old
        for new, old in zip(renewed, before, strict=True)
    )


# --------------------------------------------------------------------------- body types
def test_value_body_map_with_binary_keys_round_trips(client: ServiceBusClient) -> None:
    body: dict[Any, Any] = {b"key": b"value", b"count": 3, "text": "x"}
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(AmqpAnnotatedMessage(value_body=body))
    with client.get_queue_receiver(QUEUE) as receiver:
        (got,) = _receive(receiver, 1)
        receiver.complete_message(got)

    assert got.body_type == AmqpMessageBodyType.VALUE
    assert got.body == {b"key": b"value", b"count": 3, b"text": b"x"}


def test_sequence_body_round_trips(client: ServiceBusClient) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(AmqpAnnotatedMessage(sequence_body=[b"message", 123.456, True]))
    with client.get_queue_receiver(QUEUE) as receiver:
        (got,) = _receive(receiver, 1)
        receiver.complete_message(got)

    assert got.body_type == AmqpMessageBodyType.SEQUENCE
    assert list(got.body) == [[b"message", 123.456, True]]


def test_data_body_several_sections_round_trips(client: ServiceBusClient) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        sender.send_messages(
            AmqpAnnotatedMessage(
                data_body=[b"aa", b"bb", b"cc"],
                application_properties={"body_type": "data"},
            )
        )
    with client.get_queue_receiver(QUEUE) as receiver:
        (got,) = _receive(receiver, 1)
        receiver.complete_message(got)

    assert got.body_type == AmqpMessageBodyType.DATA
    assert list(got.body) == [b"aa", b"bb", b"cc"]
    assert got.application_properties == {b"body_type": b"data"}


# --------------------------------------------------------------------------- scheduling
def test_schedule_messages_future_time_delivered_only_after_it(client: ServiceBusClient) -> None:
    when = _utc_in(4)
    with client.get_queue_sender(QUEUE) as sender:
        numbers = sender.schedule_messages(ServiceBusMessage("later"), when)
    with client.get_queue_receiver(QUEUE) as receiver:
        early = receiver.receive_messages(max_wait_time=1)
        late = _receive(receiver, 1, wait=10)
        for message in late:
            receiver.complete_message(message)

    assert len(numbers) == 1
    assert early == []
    assert [_text(m) for m in late] == ["later"]
    assert late[0].sequence_number == numbers[0]
    assert late[0].scheduled_enqueue_time_utc == when.replace(
        microsecond=when.microsecond // 1000 * 1000
    )


def test_scheduled_enqueue_time_on_send_holds_message_until_then(
    client: ServiceBusClient,
) -> None:
    message = ServiceBusMessage("later")
    message.scheduled_enqueue_time_utc = _utc_in(4)
    _send(client, message)
    with client.get_queue_receiver(QUEUE) as receiver:
        early = receiver.receive_messages(max_wait_time=1)
        late = _receive(receiver, 1, wait=10)
        for got in late:
            receiver.complete_message(got)

    assert early == []
    assert [_text(m) for m in late] == ["later"]


def test_cancel_scheduled_messages_cancelled_message_never_delivered(
    client: ServiceBusClient,
) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        cancelled = sender.schedule_messages(ServiceBusMessage("cancelled"), _utc_in(2))
        kept = sender.schedule_messages(ServiceBusMessage("kept"), _utc_in(2))
        sender.cancel_scheduled_messages(cancelled)
    with client.get_queue_receiver(QUEUE) as receiver:
        got = _receive(receiver, 1, wait=6)
        for message in got:
            receiver.complete_message(message)
        rest = receiver.receive_messages(max_wait_time=2)  # both were due after 2 s

    assert [_text(m) for m in got] == ["kept"]
    assert got[0].sequence_number == kept[0]
    assert rest == []


def test_schedule_messages_to_topic_reaches_subscription(client: ServiceBusClient) -> None:
    with client.get_topic_sender(TOPIC) as sender:
        sender.schedule_messages(ServiceBusMessage("for-sub"), _utc_in(1))
    with client.get_subscription_receiver(TOPIC, SUBSCRIPTION) as receiver:
        got = _receive(receiver, 1, wait=6)
        for message in got:
            receiver.complete_message(message)

    assert [_text(m) for m in got] == ["for-sub"]


# --------------------------------------------------------------------------- deferral
def test_receive_deferred_messages_after_defer_returns_them_settleable(
    client: ServiceBusClient,
) -> None:
    _send(client, ServiceBusMessage("a"), ServiceBusMessage("b"))
    with client.get_queue_receiver(QUEUE) as receiver:
        first = _receive(receiver, 2)
        numbers = [_number(m) for m in first]
        for message in first:
            receiver.defer_message(message)
        nothing_left = receiver.receive_messages(max_wait_time=1)
        deferred = receiver.receive_deferred_messages(numbers)
        tokens = [m.lock_token for m in deferred]  # the SDK clears them once settled
        for message in deferred:
            receiver.complete_message(message)
        after_complete = receiver.peek_messages(max_message_count=10)

    assert nothing_left == []
    assert sorted(_text(m) for m in deferred) == ["a", "b"]
    assert all(token is not None for token in tokens)
    assert after_complete == []


def test_receive_deferred_messages_receive_and_delete_removes_them(
    client: ServiceBusClient,
) -> None:
    _send(client, ServiceBusMessage("a"))
    with client.get_queue_receiver(QUEUE) as receiver:
        (message,) = _receive(receiver, 1)
        number = _number(message)
        receiver.defer_message(message)
    with client.get_queue_receiver(
        QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as deleting:
        got = deleting.receive_deferred_messages([number])
        peeked = deleting.peek_messages(max_message_count=10)

    assert [_text(m) for m in got] == ["a"]
    assert peeked == []


def test_receive_deferred_messages_unknown_sequence_number_raises(
    client: ServiceBusClient,
) -> None:
    with client.get_queue_receiver(QUEUE) as receiver, pytest.raises(ServiceBusError):
        receiver.receive_deferred_messages([12345])


def test_receive_deferred_messages_session_receiver_gets_its_session_message(
    client: ServiceBusClient,
) -> None:
    _send(client, ServiceBusMessage("s-a", session_id="s1"), queue=SESSION_QUEUE)
    with client.get_queue_receiver(SESSION_QUEUE, session_id="s1") as receiver:
        (message,) = _receive(receiver, 1)
        receiver.defer_message(message)
        (again,) = receiver.receive_deferred_messages([_number(message)])
        receiver.complete_message(again)

    assert _text(again) == "s-a"
    assert again.session_id == "s1"


# --------------------------------------------------------------------------- peek
def test_peek_messages_from_sequence_number_starts_there(client: ServiceBusClient) -> None:
    _send(client, *(ServiceBusMessage(f"m{i}") for i in range(5)))
    with client.get_queue_receiver(QUEUE) as receiver:
        everything = receiver.peek_messages(max_message_count=10)
        third = _number(everything[2])
        from_third = receiver.peek_messages(max_message_count=10, sequence_number=third)

    assert [_text(m) for m in from_third] == ["m2", "m3", "m4"]


# --------------------------------------------------------------------------- sessions
def test_session_state_set_then_get_returns_it(client: ServiceBusClient) -> None:
    _send(client, ServiceBusMessage("m", session_id="s1"), queue=SESSION_QUEUE)
    with client.get_queue_receiver(SESSION_QUEUE, session_id="s1") as receiver:
        before = receiver.session.get_state()
        receiver.session.set_state(b"step-2")
        after = receiver.session.get_state()

    assert before is None
    assert after == b"step-2"


def test_session_renew_lock_moves_locked_until_forward(client: ServiceBusClient) -> None:
    _send(client, ServiceBusMessage("m", session_id="s1"), queue=SESSION_QUEUE)
    with client.get_queue_receiver(SESSION_QUEUE, session_id="s1") as receiver:
        first = receiver.session.locked_until_utc
        renewed = receiver.session.renew_lock()

    assert first is not None
    assert renewed >= first
    assert renewed > datetime.datetime.now(datetime.UTC)


def test_list_queue_sessions_returns_sessions_with_messages(client: ServiceBusClient) -> None:
    _send(
        client,
        ServiceBusMessage("a", session_id="s-a"),
        ServiceBusMessage("b", session_id="s-b"),
        queue=SESSION_QUEUE,
    )

    assert sorted(client.list_queue_sessions(SESSION_QUEUE)) == ["s-a", "s-b"]


def test_list_queue_sessions_state_updated_after_returns_only_recent_state(
    client: ServiceBusClient,
) -> None:
    _send(client, ServiceBusMessage("a", session_id="s-old"), queue=SESSION_QUEUE)
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    with client.get_queue_receiver(SESSION_QUEUE, session_id="s-new") as receiver:
        receiver.session.set_state(b"state")

    assert list(client.list_queue_sessions(SESSION_QUEUE, state_updated_after=cutoff)) == ["s-new"]


def test_list_queue_sessions_none_returns_empty(client: ServiceBusClient) -> None:
    assert list(client.list_queue_sessions(SESSION_QUEUE)) == []


# --------------------------------------------------------------------------- administration
def test_admin_get_queue_declared_returns_declared_properties(
    admin: ServiceBusAdministrationClient,
) -> None:
    queue = admin.get_queue(SESSION_QUEUE)

    assert queue.name == SESSION_QUEUE
    assert queue.requires_session is True
    assert queue.lock_duration == datetime.timedelta(seconds=LOCK_SECONDS)
    assert queue.max_delivery_count == 10
    assert queue.dead_lettering_on_message_expiration is True


def test_admin_list_entities_returns_every_declared_one(
    admin: ServiceBusAdministrationClient,
) -> None:
    assert sorted(q.name for q in admin.list_queues()) == [QUEUE, SESSION_QUEUE]
    assert [t.name for t in admin.list_topics()] == [TOPIC]
    assert [s.name for s in admin.list_subscriptions(TOPIC)] == [SUBSCRIPTION]


def test_admin_runtime_properties_count_active_and_dead_lettered(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    _send(client, ServiceBusMessage("a"), ServiceBusMessage("b"), ServiceBusMessage("c"))
    with client.get_queue_receiver(QUEUE) as receiver:
        (first,) = _receive(receiver, 1)
        receiver.dead_letter_message(first, reason="test")
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(ServiceBusMessage("t"))

    queue = admin.get_queue_runtime_properties(QUEUE)
    subscription = admin.get_subscription_runtime_properties(TOPIC, SUBSCRIPTION)
    topic = admin.get_topic_runtime_properties(TOPIC)
    assert queue.active_message_count == 2
    assert queue.dead_letter_message_count == 1
    assert queue.total_message_count == 3
    assert subscription.active_message_count == 1
    assert topic.subscription_count == 1


def test_admin_runtime_properties_count_scheduled(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    with client.get_queue_sender(QUEUE) as sender:
        sender.schedule_messages(ServiceBusMessage("later"), _utc_in(600))

    assert admin.get_queue_runtime_properties(QUEUE).scheduled_message_count == 1


def test_admin_get_unknown_queue_raises_not_found(admin: ServiceBusAdministrationClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        admin.get_queue("no-such-queue")


def test_admin_create_queue_then_send_and_receive_through_it(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    admin.create_queue("created", lock_duration=datetime.timedelta(seconds=45))
    _send(client, ServiceBusMessage("hello"), queue="created")
    with client.get_queue_receiver("created") as receiver:
        got = _receive(receiver, 1)
        for message in got:
            receiver.complete_message(message)

    assert admin.get_queue("created").lock_duration == datetime.timedelta(seconds=45)
    assert [_text(m) for m in got] == ["hello"]


def test_admin_create_existing_queue_raises_exists(admin: ServiceBusAdministrationClient) -> None:
    with pytest.raises(ResourceExistsError):
        admin.create_queue(QUEUE)


def test_admin_delete_queue_then_get_raises_not_found(
    admin: ServiceBusAdministrationClient,
) -> None:
    admin.delete_queue(QUEUE)

    with pytest.raises(ResourceNotFoundError):
        admin.get_queue(QUEUE)


def test_admin_update_subscription_changes_max_delivery_count(
    admin: ServiceBusAdministrationClient,
) -> None:
    subscription = admin.get_subscription(TOPIC, SUBSCRIPTION)
    subscription.max_delivery_count = 3
    admin.update_subscription(TOPIC, subscription)

    assert admin.get_subscription(TOPIC, SUBSCRIPTION).max_delivery_count == 3


def test_admin_subscription_declared_without_rules_lists_default_true_rule(
    admin: ServiceBusAdministrationClient,
) -> None:
    rules = list(admin.list_rules(TOPIC, SUBSCRIPTION))

    assert [r.name for r in rules] == ["$Default"]


def test_admin_sql_rule_with_parameters_routes_matching_messages_only(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    admin.delete_rule(TOPIC, SUBSCRIPTION, "$Default")
    admin.create_rule(
        TOPIC,
        SUBSCRIPTION,
        "red-only",
        filter=SqlRuleFilter("color = @color", parameters={"@color": "red"}),
    )
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(
            [
                ServiceBusMessage("red", application_properties={"color": "red"}),
                ServiceBusMessage("blue", application_properties={"color": "blue"}),
            ]
        )
    with client.get_subscription_receiver(TOPIC, SUBSCRIPTION) as receiver:
        got = _receive(receiver, 2, wait=2)
        for message in got:
            receiver.complete_message(message)

    assert [_text(m) for m in got] == ["red"]


def test_admin_subscription_every_rule_deleted_receives_nothing(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    admin.delete_rule(TOPIC, SUBSCRIPTION, "$Default")
    with client.get_topic_sender(TOPIC) as sender:
        sender.send_messages(ServiceBusMessage("dropped"))

    with client.get_subscription_receiver(TOPIC, SUBSCRIPTION) as receiver:
        assert receiver.receive_messages(max_wait_time=1) == []


def test_admin_rule_with_action_answers_not_implemented(
    admin: ServiceBusAdministrationClient,
) -> None:
    with pytest.raises(HttpResponseError) as raised:
        admin.create_rule(
            TOPIC,
            SUBSCRIPTION,
            "with-action",
            filter=SqlRuleFilter("1=1"),
            action=SqlRuleAction("SET color = 'green'"),
        )

    assert raised.value.status_code == 501


def test_admin_queue_forward_to_queue_messages_arrive_in_target(
    client: ServiceBusClient, admin: ServiceBusAdministrationClient
) -> None:
    admin.create_queue("forwarding", forward_to=QUEUE)
    _send(client, ServiceBusMessage("via"), queue="forwarding")
    with client.get_queue_receiver(QUEUE) as receiver:
        got = _receive(receiver, 1)
        for message in got:
            receiver.complete_message(message)

    assert [_text(m) for m in got] == ["via"]
    assert (admin.get_queue("forwarding").forward_to or "").endswith("/" + QUEUE)
    assert admin.get_queue_runtime_properties("forwarding").active_message_count == 0


def test_admin_forward_to_unknown_entity_raises(admin: ServiceBusAdministrationClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        admin.create_queue("forwarding", forward_to="no-such-queue")

    assert raised.value.status_code == 400
