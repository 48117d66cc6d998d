"""The chaos test's consumer: drains every destination with the raw SDK and records, per
message, what the verdict needs (message id, session, CloudEvents ``sequence``, CDC state).

Draining happens after the faults, in rounds: opening a session receiver costs about half a
second against the local broker, so receiving while the relay trickles messages into hundreds
of sessions would reopen each session many times; the broker keeps everything meanwhile.

Peek-lock and complete, straight to the broker (never through a fault proxy). A message the
broker hands out again after our receiver closed (``delivery_count`` > 0: locked messages
return when a link closes) is the consumer's redelivery, not the relay's duplicate; a second
FIRST delivery of a message id is a duplicate that duplicate detection let through.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError

from events.core.messages import event_from_message

__all__ = ["Received", "drain"]

_SESSION_WAIT = 1.0
_FIRST_RECEIVE_WAIT = 2.0
_NEXT_RECEIVE_WAIT = 0.1
_DRAIN_TIMEOUT = 60.0


@dataclass
class Received:
    """Everything that arrived, thread-safe."""

    #: (destination, message id) of every message seen.
    ids: set[tuple[str, str]] = field(default_factory=set)
    #: Sequences in arrival order per (destination, session id).
    sequences: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    #: order id -> (sequence, status, totalCents) of its newest OrderUpserted.
    cdc_states: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    #: event type of each message id (for the report of unexpected events).
    types: dict[str, str] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    redeliveries: int = 0
    receiver_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self,
        destination: str,
        message_id: str,
        session_id: str,
        first_delivery: bool,
        body: bytes,
        properties: dict[str | bytes, object],
        content_type: str | None,
    ) -> None:
        key = (destination, message_id)
        with self.lock:
            if key in self.ids:
                if first_delivery:
                    self.duplicates.append(key)
                else:
                    self.redeliveries += 1
                return
        event = event_from_message(body, properties, content_type)
        sequence = int(event.sequence or "-1")
        with self.lock:
            self.ids.add(key)
            self.types[message_id] = event.type
            self.sequences[(destination, session_id)].append(sequence)
            if event.type == "OrderUpserted":
                known = self.cdc_states.get(event.subject)
                if known is None or known[0] < sequence:
                    status = str(event.data.get("status"))
                    total = int(str(event.data.get("totalCents")))
                    self.cdc_states[event.subject] = (sequence, status, total)

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


def drain(client: ServiceBusClient, received: Received, threads: dict[str, int]) -> None:
    """Receive everything the destinations hold now: ``threads`` receivers per destination,
    each taking session after session until no session has messages."""
    workers = [
        threading.Thread(target=_drain_sessions, args=(client, received, destination))
        for destination, count in threads.items()
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(_DRAIN_TIMEOUT)


def _receiver(client: ServiceBusClient, destination: str) -> ServiceBusReceiver:
    if destination == "payments":
        return client.get_queue_receiver(
            destination, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=_SESSION_WAIT
        )
    return client.get_subscription_receiver(
        destination, "all", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=_SESSION_WAIT
    )


def _drain_sessions(client: ServiceBusClient, received: Received, destination: str) -> None:
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    closers: list[threading.Thread] = []
    try:
        _drain_until_empty(client, received, destination, deadline, closers)
    finally:
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))


def _drain_until_empty(
    client: ServiceBusClient,
    received: Received,
    destination: str,
    deadline: float,
    closers: list[threading.Thread],
) -> None:
    while time.monotonic() < deadline:
        # Opened by the first receive, whose max_wait_time also bounds the link's opening
        # (about half a second against the local broker); later receives wait less.
        receiver = _receiver(client, destination)
        try:
            wait = _FIRST_RECEIVE_WAIT
            while batch := receiver.receive_messages(max_message_count=100, max_wait_time=wait):
                wait = _NEXT_RECEIVE_WAIT
                for message in batch:
                    received.record(
                        destination,
                        str(message.message_id),
                        str(message.session_id),
                        (message.delivery_count or 0) == 0,
                        b"".join(message.body),
                        dict(message.application_properties or {}),
                        message.content_type,
                    )
                    receiver.complete_message(message)
        except OperationTimeoutError:
            return  # no session has messages now: this round is over for this receiver
        except Exception as exc:  # noqa: BLE001 - a receiver must not die silently
            with received.lock:
                received.receiver_errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.5)
        finally:
            # Closing waits about a second for the local broker's answer; the session is
            # released as soon as the detach is sent, so close in the background.
            closer = threading.Thread(target=receiver.close, daemon=True)
            closer.start()
            closers.append(closer)
