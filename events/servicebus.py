"""Service Bus adapter: the only module that imports azure.servicebus.

One ``ServiceBusClient`` per worker process (``service_bus_client``), one sender per
destination, reused across invocations. Batches are filled with ``create_message_batch()`` so
a send carries as many messages as fit. SDK errors are translated at this boundary:
``MessageSizeExceededError`` -> EventTooLargeError (permanent, per message); everything else ->
PublishUnavailableError (transient, the batch is retried).
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from azure.core.exceptions import AzureError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusMessageBatch,
    ServiceBusSender,
)
from azure.servicebus.exceptions import MessageSizeExceededError

from events.errors import EventTooLargeError, PublishUnavailableError, SettingsError
from events.messages import OutgoingMessage
from events.publisher import group_by_destination
from events.settings import ServiceBusConnection

__all__ = ["ServiceBusPublisher", "pack", "service_bus_client", "to_sdk_message"]

logger = logging.getLogger(__name__)

# The SDK sizes a batch as the sum of its messages, but the transfer also carries an outer
# envelope (the first message's ids and sections): a batch filled to the link's limit can be
# refused as too large. Batches therefore stop this far below the limit.
BATCH_HEADROOM = 1024

_RETRY_TOTAL = 3
_RETRY_BACKOFF = 0.5
_RETRY_BACKOFF_MAX = 8.0


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
        credential = (
            ManagedIdentityCredential(client_id=connection.client_id)
            if connection.credential == "managedidentity"
            else DefaultAzureCredential()
        )
        return ServiceBusClient(
            connection.fully_qualified_namespace,
            credential,
            retry_total=_RETRY_TOTAL,
            retry_backoff_factor=_RETRY_BACKOFF,
            retry_backoff_max=_RETRY_BACKOFF_MAX,
        )
    raise SettingsError("no Service Bus connection configured")


def pack(
    messages: Sequence[OutgoingMessage], new_batch: Callable[[], ServiceBusMessageBatch]
) -> list[ServiceBusMessageBatch | ServiceBusMessage]:
    """The sends for messages of one destination, in order: batches filled greedily (the
    fewest in-order batches that fit), and a message that fits no batch of its own alone."""
    sends: list[ServiceBusMessageBatch | ServiceBusMessage] = []
    batch = new_batch()
    for message in messages:
        sdk_message = to_sdk_message(message)
        try:
            batch.add_message(sdk_message)
            continue
        except MessageSizeExceededError:
            pass
        if len(batch):
            sends.append(batch)
            batch = new_batch()
        try:
            batch.add_message(sdk_message)
        except MessageSizeExceededError:
            # Within the link's limit (check() passed) but not within the headroom: alone.
            sends.append(sdk_message)
    if len(batch):
        sends.append(batch)
    return sends


class ServiceBusPublisher:
    """Publisher over the azure-servicebus SDK. Thread-safe: senders are not, so one lock."""

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, ServiceBusSender] = {}
        self._batch_limits: dict[str, int] = {}
        self._lock = threading.Lock()

    def check(self, message: OutgoingMessage) -> None:
        with self._lock, self._translated(message.destination):
            batch = self._sender(message.destination).create_message_batch()
            try:
                batch.add_message(to_sdk_message(message))
            except MessageSizeExceededError as exc:
                raise EventTooLargeError(
                    f"message {message.message_id} exceeds what {message.destination} "
                    f"accepts ({batch.max_size_in_bytes} bytes)"
                ) from exc

    def publish(self, messages: Sequence[OutgoingMessage]) -> int:
        sends = 0
        with self._lock:
            for destination, group in group_by_destination(messages).items():
                with self._translated(destination):
                    sends += self._publish_to(destination, group)
        return sends

    def close(self) -> None:
        with self._lock:
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()

    def _publish_to(self, destination: str, group: list[OutgoingMessage]) -> int:
        sender = self._sender(destination)
        limit = self._batch_limit(destination, sender)
        sends = pack(group, lambda: sender.create_message_batch(max_size_in_bytes=limit))
        for send in sends:
            sender.send_messages(send)
        return len(sends)

    def _batch_limit(self, destination: str, sender: ServiceBusSender) -> int:
        limit = self._batch_limits.get(destination)
        if limit is None:
            link_limit = sender.create_message_batch().max_size_in_bytes
            limit = max(link_limit - BATCH_HEADROOM, link_limit // 2)
            self._batch_limits[destination] = limit
        return limit

    def _sender(self, destination: str) -> ServiceBusSender:
        sender = self._senders.get(destination)
        if sender is None:
            # Queue and topic senders are the same link to the entity path; one call serves both.
            sender = self._client.get_topic_sender(destination)
            self._senders[destination] = sender
        return sender

    @contextmanager
    def _translated(self, destination: str) -> Iterator[None]:
        try:
            yield
        except EventTooLargeError:
            raise
        except (AzureError, OSError) as exc:
            # The link may be half-open after a failure: start the next attempt afresh.
            stale = self._senders.pop(destination, None)
            if stale is not None:
                try:
                    stale.close()
                except (AzureError, OSError):
                    logger.debug("closing a failed sender raised", exc_info=True)
            raise PublishUnavailableError(
                f"Service Bus did not accept messages for {destination}: {type(exc).__name__}"
            ) from exc
