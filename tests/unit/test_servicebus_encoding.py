"""Each message is built and encoded once: ``check`` measures it, ``publish`` packs the same
bytes, and the batches are exactly what the SDK's own ``add_message`` builds. An SDK client
fake (real ``ServiceBusMessageBatch`` objects, sends recorded, no network) is injected."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.exceptions import ServiceBusConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from events.adapters.servicebus import (
    BATCH_HEADROOM,
    EncodedMessage,
    ServiceBusPublisher,
    encode,
    encode_amqp,
    pack,
    to_sdk_message,
)
from events.core.messages import OutgoingMessage, Router
from events.core.quarantine import InMemoryQuarantine, QuarantineReason
from events.core.relay import Relay
from events.errors import EventTooLargeError, PublishUnavailableError
from tests import factories

_LINK_LIMIT = 256 * 1024


def _wire(send: ServiceBusMessageBatch | ServiceBusMessage) -> bytes:
    """The bytes the SDK transfers for a batch (its private message, encoded by its encoder)."""
    output = bytearray()
    message = send._message
    encode_payload(output, message)
    return bytes(output)


def _wire_alone(message: ServiceBusMessage) -> bytes:
    """The bytes the SDK transfers for a message sent on its own (it converts it again)."""
    output = bytearray()
    encode_payload(output, PyamqpTransport.to_outgoing_amqp_message(message.raw_amqp_message))
    return bytes(output)


class _Sender:
    """What the publisher uses of ServiceBusSender; sends are recorded, never transferred."""

    def __init__(self, log: _Client) -> None:
        self._log = log

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or _LINK_LIMIT)

    def send_messages(
        self, message: ServiceBusMessageBatch | ServiceBusMessage, timeout: float | None = None
    ) -> None:
        if self._log.fail_sends:
            self._log.fail_sends -= 1
            raise ServiceBusConnectionError(message="connection dropped")
        self._log.on_send()
        self._log.sent.append(message)

    def close(self) -> None:
        pass


class _Client:
    fully_qualified_namespace = "ns.example:5671"

    def __init__(self) -> None:
        self.sent: list[ServiceBusMessageBatch | ServiceBusMessage] = []
        self.senders = 0
        self.fail_sends = 0
        self.on_send: Callable[[], None] = lambda: None

    def get_topic_sender(self, name: str) -> _Sender:
        self.senders += 1
        return _Sender(self)

    def sent_ids(self) -> list[str]:
        ids: list[str] = []
        for send in self.sent:
            if isinstance(send, ServiceBusMessageBatch):
                ids.extend(str(m.message_id) for m in send._messages)
            else:
                ids.append(str(send.message_id))
        return ids


class _CountingEncoder:
    def __init__(self) -> None:
        self.encoded: list[str] = []

    def __call__(self, message: OutgoingMessage) -> EncodedMessage:
        self.encoded.append(message.message_id)
        return encode(message)


def _publisher(client: _Client, encoder: _CountingEncoder) -> ServiceBusPublisher:
    return ServiceBusPublisher(cast(ServiceBusClient, client), timeout=5.0, encoder=encoder)


def _message(n: int, body: bytes, session: str = "s") -> OutgoingMessage:
    return OutgoingMessage(
        destination="integration-events",
        message_id=f"m-{n:05d}",
        session_id=session,
        subject="OrderPlaced",
        content_type="application/json",
        body=body,
        application_properties={"cloudEvents:id": f"m-{n:05d}", "cloudEvents:type": "Ö-ü"},
    )


# Below and above the 256-byte step in the SDK's per-message overhead, text that is not ASCII,
# and messages large enough that batches split: [0-3], [4], [5, 6].
_MIX = [
    _message(0, b"{}"),
    _message(1, b'{"a":"' + b"x" * 120 + b'"}'),
    _message(2, '{"name":"Zoë 東京"}'.encode(), session="t"),
    _message(3, b"x" * 100_000),
    _message(4, b"y" * 170_000),
    _message(5, b"z" * (_LINK_LIMIT - 2000)),
    _message(6, b"{}", session="u"),
]


def _sdk_pack(messages: list[OutgoingMessage], limit: int) -> list[ServiceBusMessageBatch]:
    """The same greedy packing through the SDK's public add_message."""
    batches = [ServiceBusMessageBatch(max_size_in_bytes=limit)]
    for message in messages:
        try:
            batches[-1].add_message(to_sdk_message(message))
        except Exception:  # noqa: BLE001 - MessageSizeExceededError: start a new batch
            batches.append(ServiceBusMessageBatch(max_size_in_bytes=limit))
            batches[-1].add_message(to_sdk_message(message))
    return batches


def test_pack_batches_are_byte_identical_to_the_sdks_add_message() -> None:
    limit = _LINK_LIMIT - BATCH_HEADROOM

    sends = pack(_MIX, lambda: ServiceBusMessageBatch(max_size_in_bytes=limit))
    theirs = _sdk_pack(_MIX, limit)

    ours = [send for send in sends if isinstance(send, ServiceBusMessageBatch)]
    assert len(ours) == len(sends)
    assert [len(b) for b in ours] == [len(b) for b in theirs] == [4, 1, 2]
    assert [b.size_in_bytes for b in ours] == [b.size_in_bytes for b in theirs]
    assert [_wire(b) for b in ours] == [_wire(b) for b in theirs]


def test_pack_message_that_fits_only_the_link_goes_alone_unencoded_again() -> None:
    encoder = _CountingEncoder()
    alone = _message(1, b"x" * (_LINK_LIMIT - 700))
    messages = [_message(0, b"{}"), alone, _message(2, b"{}")]

    sends = pack(
        messages,
        lambda: ServiceBusMessageBatch(max_size_in_bytes=_LINK_LIMIT - BATCH_HEADROOM),
        encoder,
    )

    assert [type(s).__name__ for s in sends] == [
        "ServiceBusMessageBatch",
        "ServiceBusMessage",
        "ServiceBusMessageBatch",
    ]
    assert encoder.encoded == ["m-00000", "m-00001", "m-00002"]
    sent_alone = cast(ServiceBusMessage, sends[1])
    assert _wire_alone(sent_alone) == _wire_alone(to_sdk_message(alone))


def test_publisher_check_then_publish_encodes_each_message_once() -> None:
    client, encoder = _Client(), _CountingEncoder()
    publisher = _publisher(client, encoder)

    checked = [publisher.check(m) for m in _MIX]
    sends = publisher.publish(checked)

    assert encoder.encoded == [m.message_id for m in _MIX]
    assert checked == _MIX  # the same messages, carrying their encoding
    assert client.sent_ids() == [m.message_id for m in _MIX]
    assert sends == len(client.sent) == 3


def test_publisher_publish_of_unchecked_messages_encodes_each_once() -> None:
    client, encoder = _Client(), _CountingEncoder()

    _publisher(client, encoder).publish(_MIX)

    assert encoder.encoded == [m.message_id for m in _MIX]
    assert client.sent_ids() == [m.message_id for m in _MIX]


def test_publisher_check_refuses_a_message_over_the_link_limit_with_its_size() -> None:
    client, encoder = _Client(), _CountingEncoder()

    with pytest.raises(EventTooLargeError) as refused:
        _publisher(client, encoder).check(_message(0, b"x" * _LINK_LIMIT))

    assert refused.value.limit == _LINK_LIMIT
    assert refused.value.size is not None
    assert refused.value.size > _LINK_LIMIT
    assert client.sent == []


def test_publisher_retry_after_a_failed_send_packs_afresh_on_a_new_sender() -> None:
    client, encoder = _Client(), _CountingEncoder()
    publisher = _publisher(client, encoder)
    checked = [publisher.check(m) for m in _MIX]
    client.fail_sends = 1

    with pytest.raises(PublishUnavailableError):
        publisher.publish(checked)
    publisher.publish(checked)

    # The failed sender was discarded: the retry opened another and built new batches from
    # the measured encodings (a message's encoding depends on nothing but the message).
    assert client.senders == 2
    assert client.sent_ids() == [m.message_id for m in _MIX]
    assert encoder.encoded == [m.message_id for m in _MIX]


def test_relay_with_servicebus_publisher_encodes_each_event_once() -> None:
    client, encoder = _Client(), _CountingEncoder()
    relay = Relay(
        factories.feed(),
        _publisher(client, encoder),
        InMemoryQuarantine(),
        Router(default="integration-events"),
    )
    documents = [factories.placed(f"order-{n % 7}", f"evt-{n}") for n in range(60)]

    outcome = relay.process(documents)

    assert outcome.published == 60
    assert sorted(encoder.encoded) == sorted(client.sent_ids())
    assert len(encoder.encoded) == 60
    assert len(client.sent) == 1


def test_relay_oversized_event_is_quarantined_before_any_send() -> None:
    client, encoder = _Client(), _CountingEncoder()
    quarantine = InMemoryQuarantine()
    quarantined_at_first_send: list[int] = []
    client.on_send = lambda: quarantined_at_first_send.append(len(quarantine.records))
    relay = Relay(
        factories.feed(),
        _publisher(client, encoder),
        quarantine,
        Router(default="integration-events"),
    )
    huge = factories.shipped("order-2", "evt-huge", carrier="x" * 300_000)
    after = factories.placed("order-2", "evt-after")  # same aggregate: parked behind it

    outcome = relay.process([factories.placed("order-1", "evt-1"), huge, after])

    assert (outcome.published, outcome.quarantined) == (1, 2)
    assert quarantined_at_first_send == [2]
    assert [r.reason for r in quarantine.records.values()] == [
        QuarantineReason.EVENT_TOO_LARGE,
        QuarantineReason.BLOCKED_BEHIND_QUARANTINED,
    ]
    assert client.sent_ids() == [factories.outbox_id("order-1", "evt-1")]


_TEXT = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["", "x" * 255, "x" * 256, "é" * 127, "é" * 128, "東" * 85, "東" * 86]
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    message_id=st.text(st.characters(codec="utf-8"), min_size=1, max_size=128),
    session=st.text(st.characters(codec="utf-8"), min_size=1, max_size=128),
    subject=_TEXT,
    body=st.binary(max_size=600) | st.sampled_from([b"x" * 255, b"x" * 256]),
    properties=st.dictionaries(_TEXT, _TEXT, max_size=40),
)
def test_encode_any_message_is_byte_identical_to_the_sdks_encoder(
    message_id: str, session: str, subject: str, body: bytes, properties: dict[str, str]
) -> None:
    message = OutgoingMessage(
        destination="integration-events",
        message_id=message_id,
        session_id=session,
        subject=subject,
        content_type="application/json",
        body=body,
        application_properties=properties,
    )

    encoded = encode(message)

    assert bytes(encoded.data) == _wire_alone(to_sdk_message(message))
    sdk_batch = ServiceBusMessageBatch(max_size_in_bytes=_LINK_LIMIT)
    sdk_batch.add_message(to_sdk_message(message))
    assert bytes(sdk_batch._message[5][0]) == bytes(encoded.data)  # what add_message appends


def test_encode_amqp_message_the_fast_path_does_not_cover_is_left_to_the_sdk() -> None:
    amqp = encode(_message(0, b"{}")).sdk_message._message
    numeric = amqp._replace(application_properties={"n": 7, "s": "x"})
    expected = bytearray()
    encode_payload(expected, numeric)

    assert encode_amqp(numeric) == expected


@pytest.mark.parametrize(
    "properties",
    [
        {"": "x" * 250},  # map entries of 254 bytes: map8
        {"": "x" * 251},  # 255 bytes: map32
        {"": "x" * 252},
        {f"{n:02x}": "" for n in range(127)},  # 254 map items: map8 by count
        {f"{n:02x}": "" for n in range(128)},  # 256 map items: map32
    ],
)
def test_encode_map_size_at_the_small_encoding_limits_matches_the_sdk(
    properties: dict[str, str],
) -> None:
    message = dataclasses.replace(_message(0, b"{}"), application_properties=properties)

    assert bytes(encode(message).data) == _wire_alone(to_sdk_message(message))
