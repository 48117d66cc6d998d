"""Service Bus adapter: the only module that imports azure.servicebus.

One ``ServiceBusClient`` per worker process (``service_bus_client``), one sender per
destination, reused across invocations. Batches are filled with ``create_message_batch()`` so
a send carries as many messages as fit. SDK errors are translated at this boundary:
``MessageSizeExceededError`` -> EventTooLargeError (permanent, per message); everything else ->
PublishUnavailableError (transient, the batch is retried).

Deadlines: every SDK call that may touch the network (opening a sender, which signs in over
CBS; creating a batch; sending) runs on a worker thread and is waited for at most ``timeout``
seconds. The SDK's own ``timeout`` arguments do not bound the sign-in: against a broker that
accepts TCP and never answers AMQP, ``send_messages(..., timeout=3)`` with ``try_timeout=3``
was still waiting after 35 s (azure-servicebus 7.15, observed). On expiry the sender is
discarded (closed on a worker: closing can hang too), so the next attempt starts afresh, and
the caller gets PublishUnavailableError naming the endpoint and the entity. Each destination
has its own lock, taken with the same deadline: one feed's stuck send never holds another
destination, and holds the same destination at most one deadline.

Each message is built and encoded once (``encode``): ``check`` measures the encoding against
the link's limit and hands it back on the message; ``pack`` appends those same bytes to the
batches. The SDK's ``ServiceBusMessageBatch.add_message`` would encode a message twice per
call (once to size it, once to add it), and a check and a pack through it four times; its
bookkeeping is reproduced in ``_append`` instead, pinned byte for byte against
``add_message`` by tests/unit/test_servicebus_encoding.py.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar, cast

from azure.core.exceptions import AzureError
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusSender,
)

# Private SDK names, used only to encode a message once (see the module docstring); the unit
# tests compare the result with the SDK's public add_message on every run.
from azure.servicebus._common.constants import _BATCH_MESSAGE_OVERHEAD_COST
from azure.servicebus._common.tracing import trace_message
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.message import Message as AmqpMessage
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport
from azure.servicebus.amqp import (
    AmqpAnnotatedMessage,
    AmqpMessageHeader,
    AmqpMessageProperties,
)
from azure.servicebus.exceptions import (
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
)

from events.adapters.identity import credential_for
from events.availability import AvailabilityLog
from events.connections import ServiceBusConnection, connection_string_parts
from events.core.messages import OutgoingMessage
from events.core.publisher import group_by_destination
from events.core.telemetry import send_span
from events.errors import EventTooLargeError, PublishUnavailableError, SettingsError
from events.fencing import check_fence

__all__ = [
    "DEFAULT_TIMEOUT",
    "EncodedMessage",
    "ServiceBusPublisher",
    "encode",
    "encode_amqp",
    "endpoint_of",
    "pack",
    "service_bus_client",
    "to_sdk_message",
]

logger = logging.getLogger(__name__)

# The SDK sizes a batch as the sum of its messages, but the transfer also carries an outer
# envelope (the first message's ids and sections): a batch filled to the link's limit can be
# refused as too large. Batches therefore stop this far below the limit.
BATCH_HEADROOM = 1024

_RETRY_TOTAL = 3
_RETRY_BACKOFF = 0.5
_RETRY_BACKOFF_MAX = 8.0

#: Seconds one SDK call may take (RELAY_SERVICEBUS_TIMEOUT overrides it).
DEFAULT_TIMEOUT = 30.0
_POLL = 0.1
_AMQP_PORT = 5671
_AMQP_PLAIN_PORT = 5672

_T = TypeVar("_T")


def endpoint_of(connection: ServiceBusConnection) -> str:
    """``host:port`` of a connection, for messages an operator can act on."""
    if connection.connection_string:
        parts = connection_string_parts(connection.connection_string)
        address = parts.get("endpoint", "").removeprefix("sb://").strip("/")
        plain = parts.get("usedevelopmentemulator", "").lower() == "true"
    else:
        address, plain = connection.fully_qualified_namespace or "", False
    if address and ":" not in address:
        address = f"{address}:{_AMQP_PLAIN_PORT if plain else _AMQP_PORT}"
    return address or "(no endpoint)"


def to_sdk_message(message: OutgoingMessage) -> ServiceBusMessage:
    properties: dict[str | bytes, int | float | bytes | bool | str | uuid.UUID] = {
        key: value for key, value in message.application_properties.items()
    }
    return ServiceBusMessage(
        body=message.body,
        message_id=message.message_id,
        session_id=message.session_id,
        subject=message.subject,
        content_type=message.content_type,
        application_properties=properties,
    )


@dataclass(frozen=True, eq=False)
class EncodedMessage:
    """A message as the SDK sends it, built and encoded once: the SDK message (sent as is
    when it fits no batch) and its AMQP encoding (appended to batches as is)."""

    sdk_message: ServiceBusMessage
    data: bytearray

    @property
    def section(self) -> int:
        """Bytes this message adds to a batch, as ``ServiceBusMessageBatch`` counts them."""
        size = len(self.data)
        return size + _BATCH_MESSAGE_OVERHEAD_COST[0 if size < 256 else 1]


def encode(message: OutgoingMessage) -> EncodedMessage:
    """Build the SDK message and encode it, once, as ``ServiceBusMessageBatch.add_message``
    would (outgoing AMQP message, tracing, encoding).

    The AMQP message is described with the SDK's public ``AmqpAnnotatedMessage`` and the SDK
    message made from it as the SDK makes one from an annotated message: building a
    ``ServiceBusMessage`` from keywords costs as much again (a header and properties object
    per message, set field by field). The result encodes to the same bytes as
    ``to_sdk_message`` (pinned by tests/unit/test_servicebus_encoding.py).
    """
    annotated = AmqpAnnotatedMessage(
        data_body=message.body,
        header=AmqpMessageHeader(),
        properties=AmqpMessageProperties(
            message_id=message.message_id,
            subject=message.subject,
            content_type=message.content_type,
            group_id=message.session_id,
        ),
        application_properties=dict(message.application_properties),
    )
    amqp = PyamqpTransport.to_outgoing_amqp_message(annotated)
    amqp = trace_message(amqp, amqp_transport=PyamqpTransport)  # type: ignore[arg-type]  # the SDK passes the class too
    sdk_message = ServiceBusMessage(None, message=amqp, raw_amqp_message=annotated)
    return EncodedMessage(sdk_message, encode_amqp(cast(AmqpMessage, amqp)))


#: Section descriptors: described type (0x00), smallulong (0x53), the section's code.
_APPLICATION_PROPERTIES = b"\x00\x53\x74"
_DATA = b"\x00\x53\x75"
_SMALL = 255


def encode_amqp(amqp: AmqpMessage) -> bytearray:
    """The bytes the SDK's ``encode_payload`` writes for this message, faster.

    The SDK's encoder describes every value as a typed dict and dispatches on it; most of a
    relay message is its eleven string application properties and its body, so those two
    sections are written here, as the SDK writes them (smallest constructors: str8/str32,
    map8/map32, vbin8/vbin32), and the SDK encodes the sections before them (header,
    annotations, properties). Anything else (a non-string property, a sequence or value
    body, a footer) goes through the SDK's encoder alone. Byte equality with
    ``encode_payload`` is pinned on arbitrary messages by tests/unit/test_servicebus_encoding.py.
    https://github.com/Azure/azure-sdk-for-python/blob/azure-servicebus_7.15.0/sdk/servicebus/azure-servicebus/azure/servicebus/_pyamqp/_encode.py
    """
    output = bytearray()
    properties, data = amqp.application_properties, amqp.data
    if (
        amqp.sequence
        or amqp.value
        or amqp.footer
        or not properties
        or not isinstance(data, list)
        or not all(type(k) is str and type(v) is str for k, v in properties.items())
        or not all(isinstance(item, bytes | bytearray) for item in data)
    ):
        encode_payload(output, amqp)
        return output
    encode_payload(output, amqp._replace(application_properties=None, data=None))
    entries = bytearray()
    for key, value in properties.items():
        _string(entries, cast(str, key))
        _string(entries, cast(str, value))
    count = 2 * len(properties)
    output += _APPLICATION_PROPERTIES
    if count <= _SMALL and len(entries) < _SMALL:
        output += bytes((0xC1, len(entries) + 1, count))
    else:
        output += b"\xd1" + struct.pack(">LL", len(entries) + 4, count)
    output += entries
    for item in data:
        output += _DATA
        size = len(item)
        output += bytes((0xA0, size)) if size <= _SMALL else b"\xb0" + struct.pack(">L", size)
        output += item
    return output


def _string(output: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    size = len(raw)
    output += bytes((0xA1, size)) if size <= _SMALL else b"\xb1" + struct.pack(">L", size)
    output += raw


#: Size the SDK counts for an empty batch (its envelope without messages).
_EMPTY_BATCH = ServiceBusMessageBatch().size_in_bytes


def _append(batch: ServiceBusMessageBatch, encoded: EncodedMessage) -> bool:
    """Add an encoded message to a batch if it fits, exactly as ``add_message`` would (same
    size accounting, data section and envelope properties), without encoding it again.
    https://github.com/Azure/azure-sdk-for-python/blob/azure-servicebus_7.15.0/sdk/servicebus/azure-servicebus/azure/servicebus/_common/message.py
    """
    size_after_add = batch.size_in_bytes + encoded.section
    if size_after_add > batch.max_size_in_bytes:
        return False
    # The batch's private state, as ServiceBusMessageBatch._add leaves it.
    cast(list[bytearray], batch._message[5]).append(encoded.data)
    batch._size = size_after_add
    batch._count += 1
    batch._messages.append(encoded.sdk_message)
    if batch._count == 1:  # the envelope takes the first message's ids
        sdk_message = encoded.sdk_message
        batch._amqp_transport.set_batch_envelope_properties(
            batch._message,
            sdk_message.message_id,
            sdk_message.session_id,
            sdk_message.partition_key,
        )
    return True


def encoding_of(
    message: OutgoingMessage, encoder: Callable[[OutgoingMessage], EncodedMessage] = encode
) -> EncodedMessage:
    """The encoding ``check`` measured for this message, or a new one."""
    measured = message.encoding
    return measured if isinstance(measured, EncodedMessage) else encoder(message)


@functools.cache
def service_bus_client(connection: ServiceBusConnection) -> ServiceBusClient:
    """The process-wide client for a connection (cached: never one per invocation)."""
    # The SDK's own retries cover short blips; longer outages surface as a transient error
    # and the host retries the whole batch with its capped backoff.
    if connection.connection_string:
        return ServiceBusClient.from_connection_string(
            connection.connection_string,
            retry_total=_RETRY_TOTAL,
            retry_backoff_factor=_RETRY_BACKOFF,
            retry_backoff_max=_RETRY_BACKOFF_MAX,
        )
    if connection.fully_qualified_namespace:
        credential = credential_for(connection.credential, connection.client_id)
        return ServiceBusClient(
            connection.fully_qualified_namespace,
            credential,
            retry_total=_RETRY_TOTAL,
            retry_backoff_factor=_RETRY_BACKOFF,
            retry_backoff_max=_RETRY_BACKOFF_MAX,
        )
    raise SettingsError(f"no Service Bus connection configured: set {connection.setting}")


def pack(
    messages: Sequence[OutgoingMessage],
    new_batch: Callable[[], ServiceBusMessageBatch],
    encoder: Callable[[OutgoingMessage], EncodedMessage] = encode,
) -> list[ServiceBusMessageBatch | ServiceBusMessage]:
    """The sends for messages of one destination, in order: batches filled greedily (the
    fewest in-order batches that fit), and a message that fits no batch of its own alone.
    Messages ``check`` returned are packed with the encoding it measured; others are encoded
    here, once each."""
    sends: list[ServiceBusMessageBatch | ServiceBusMessage] = []
    batch = new_batch()
    for message in messages:
        encoded = encoding_of(message, encoder)
        if _append(batch, encoded):
            continue
        if len(batch):
            sends.append(batch)
            batch = new_batch()
        if not _append(batch, encoded):
            # Within the link's limit (check() passed) but not within the headroom: alone.
            sends.append(encoded.sdk_message)
    if len(batch):
        sends.append(batch)
    return sends


@dataclass
class _Destination:
    """One entity's sender and batch limit; ``lock`` serialises the SDK calls on it."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    sender: ServiceBusSender | None = None
    link_limit: int | None = None
    batch_limit: int | None = None


class ServiceBusPublisher:
    """Publisher over the azure-servicebus SDK. Thread-safe: one lock per destination (senders
    are not thread-safe), every network call bounded by ``timeout`` seconds."""

    def __init__(
        self,
        client: ServiceBusClient,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        endpoint: str | None = None,
        setting: str = "the Service Bus connection setting",
        encoder: Callable[[OutgoingMessage], EncodedMessage] = encode,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be greater than 0")
        self._client = client
        self._timeout = timeout
        self._endpoint = endpoint or client.fully_qualified_namespace
        self._setting = setting
        self._encoder = encoder
        self._destinations: dict[str, _Destination] = {}
        self._registry = threading.Lock()
        self._closed = threading.Event()
        self._availability = AvailabilityLog(logger)

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def check(self, message: OutgoingMessage) -> OutgoingMessage:
        encoded = encoding_of(message, self._encoder)  # pure CPU: outside the lock
        limit = self._known_link_limit(message.destination)
        if limit is None:
            with self._holding(message.destination) as destination:
                limit, _ = self._bounded(destination, lambda: self._limits(destination))
        # Alone in an empty batch of the link's size, as the SDK would size it.
        size = _EMPTY_BATCH + encoded.section
        if size > limit:
            raise EventTooLargeError(
                f"message {message.message_id} is {size} bytes, more than what "
                f"{message.destination} accepts ({limit} bytes)",
                resource=message.destination,
                ids={"message": message.message_id},
                size=size,
                limit=limit,
            )
        return message.measured(encoded)

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        sends = 0
        for name, group in group_by_destination(messages).items():
            with self._holding(name) as destination:
                sends += self._publish_to(destination, group)
        return sends

    def probe(self, destination: str) -> None:
        """Open a sender on ``destination`` (sign-in and attach), within the deadline.

        SettingsError when the entity does not exist or the credentials are refused (fix the
        configuration); PublishUnavailableError when Service Bus does not answer in time.
        """
        try:
            with self._holding(destination) as state:
                self._bounded(state, lambda: self._limits(state))
        except PublishUnavailableError as exc:
            cause = exc.__cause__
            if isinstance(cause, MessagingEntityNotFoundError):
                raise SettingsError(
                    f"Service Bus entity '{destination}' does not exist at {self._endpoint}: "
                    f"create it, or fix the routes in the declaration",
                    resource=destination,
                ) from cause
            if isinstance(cause, ServiceBusAuthenticationError | ServiceBusAuthorizationError):
                raise SettingsError(
                    f"Service Bus {self._endpoint} refused the credentials for '{destination}': "
                    f"check {self._setting} (key, or the identity's Data Sender role)",
                    resource=destination,
                    setting=self._setting,
                ) from cause
            raise

    def close(self) -> None:
        """Stop waiting for calls in flight (they raise PublishUnavailableError) and close
        every sender without waiting for it."""
        self._closed.set()
        with self._registry:
            destinations = list(self._destinations.values())
        for destination in destinations:
            self._discard(destination)

    # -- internals ---------------------------------------------------------------------------

    def _publish_to(self, destination: _Destination, group: list[OutgoingMessage]) -> int:
        _, limit = self._bounded(destination, lambda: self._limits(destination))
        sender = self._open(destination)
        sends = self._bounded(
            destination,
            lambda: pack(
                group,
                lambda: sender.create_message_batch(max_size_in_bytes=limit),
                self._encoder,
            ),
        )
        first = 0
        for send in sends:
            # Sends are packed in order: this one carries the next len(send) messages.
            count = len(send) if isinstance(send, ServiceBusMessageBatch) else 1
            with send_span(destination.name, group[first : first + count], self._endpoint):
                self._bounded(destination, lambda send=send: self._send(sender, send))  # type: ignore[misc]
            first += count
        # Only accepted sends prove the entity works: opening a link to a missing entity can
        # succeed (the refusal may come with the first transfer).
        self._availability.up(self._where(destination))
        return len(sends)

    def _send(
        self, sender: ServiceBusSender, send: ServiceBusMessageBatch | ServiceBusMessage
    ) -> None:
        """One send, fenced on the thread that performs it (the caller's context copied), so
        that as little as possible happens between the check and the transfer."""
        check_fence()
        sender.send_messages(send, timeout=self._timeout)

    def _limits(self, destination: _Destination) -> tuple[int, int]:
        """The link's limit and the batch limit (less the headroom); the first call opens
        the sender and reads the link's limit (network), later ones until a discard do not."""
        link_limit, batch_limit = destination.link_limit, destination.batch_limit
        if link_limit is None or batch_limit is None:
            link_limit = self._open(destination).create_message_batch().max_size_in_bytes
            batch_limit = max(link_limit - BATCH_HEADROOM, link_limit // 2)
            destination.link_limit, destination.batch_limit = link_limit, batch_limit
        return link_limit, batch_limit

    def _open(self, destination: _Destination) -> ServiceBusSender:
        if destination.sender is None:
            # Queue and topic senders are the same link to the entity path; one call serves both.
            destination.sender = self._client.get_topic_sender(destination.name)
        return destination.sender

    def _known_link_limit(self, name: str) -> int | None:
        """The link's limit while the sender is open, read without taking the destination's
        lock (one attribute read; a discard racing with it only sends the caller the bounded
        way). None when it must be learnt first, or when the publisher is closed."""
        destination = self._destinations.get(name)
        if destination is None or self._closed.is_set():
            return None
        return destination.link_limit

    def _where(self, destination: _Destination) -> str:
        return f"Service Bus {self._endpoint} entity {destination.name}"

    @contextmanager
    def _holding(self, name: str) -> Iterator[_Destination]:
        with self._registry:
            destination = self._destinations.setdefault(name, _Destination(name))
        if self._closed.is_set():
            raise PublishUnavailableError(f"{self._where(destination)}: the publisher is closed")
        if not destination.lock.acquire(timeout=self._timeout):
            raise PublishUnavailableError(
                f"{self._where(destination)}: another send is still in progress after "
                f"{self._timeout:g} s"
            )
        try:
            yield destination
        finally:
            destination.lock.release()

    def _bounded(self, destination: _Destination, call: Callable[[], _T]) -> _T:
        """``call()`` on a worker thread, waited for at most the deadline (see the module
        docstring); SDK errors become PublishUnavailableError naming the entity."""
        outcome: list[tuple[bool, object]] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome.append((False, exc))
            finally:
                done.set()

        # A daemon thread: a call hung in the SDK must never keep the process alive.
        # The caller's context goes along: its fence (events.fencing) is checked there.
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(work,),
            name=f"servicebus-{destination.name}",
            daemon=True,
        ).start()
        give_up = time.monotonic() + self._timeout
        while not done.wait(_POLL):
            if self._closed.is_set():
                self._discard(destination)
                raise PublishUnavailableError(
                    f"{self._where(destination)}: the publisher was closed during the call"
                )
            if time.monotonic() >= give_up:
                self._discard(destination)
                reason = f"no answer within {self._timeout:g} s"
                self._availability.down(self._where(destination), reason)
                raise PublishUnavailableError(f"{self._where(destination)}: {reason}")
        succeeded, value = outcome[0]
        if succeeded:
            return value  # type: ignore[return-value]  # call()'s own result
        if isinstance(value, EventTooLargeError | MessageSizeExceededError):
            raise value
        if isinstance(value, AzureError | OSError):
            self._discard(destination)
            reason = _reason(value)
            self._availability.down(self._where(destination), reason)
            raise PublishUnavailableError(f"{self._where(destination)}: {reason}") from value
        raise value  # type: ignore[misc]  # a bug: let it through unchanged

    def _discard(self, destination: _Destination) -> None:
        """Forget the sender (the link may be half-open) and close it on a worker thread."""
        stale, destination.sender = destination.sender, None
        destination.batch_limit = destination.link_limit = None
        if stale is not None:
            threading.Thread(
                target=_close_quietly, args=(stale,), name="servicebus-close", daemon=True
            ).start()


def _reason(error: BaseException) -> str:
    if isinstance(error, MessagingEntityNotFoundError):
        return (
            "the entity does not exist: create it, or fix the routes in the declaration "
            f"({type(error).__name__})"
        )
    if isinstance(error, ServiceBusAuthenticationError | ServiceBusAuthorizationError):
        return f"credentials refused: check the connection setting ({type(error).__name__})"
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _close_quietly(sender: ServiceBusSender) -> None:
    try:
        sender.close()
    except Exception:  # the sender is discarded: nothing depends on its close
        logger.debug("closing a discarded sender raised", exc_info=True)
