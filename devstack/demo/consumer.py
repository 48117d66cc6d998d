"""The demo consumer: session receivers through the idempotent consumer helper."""

from __future__ import annotations

import sys
import threading

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from devstack.demo.ledger import Ledger
from events.consumer import IdempotentConsumer
from events.envelope import IntegrationEvent
from events.messages import event_from_message
from events.stores import CosmosInbox

__all__ = ["Consumer"]


class Consumer:
    """Receives session by session through the idempotent consumer helper."""

    def __init__(
        self, client: ServiceBusClient, inbox: CosmosInbox, ledger: Ledger, *, quiet: bool
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._ledger = ledger
        self._quiet = quiet

    def _show(self, event: IntegrationEvent, destination: str) -> None:
        self._ledger.got(event, destination)
        if not self._quiet:
            print(f"  received {event.type:<18} {event.subject:<22} seq={event.sequence}")

    def _receiver(self, destination: str) -> ServiceBusReceiver:
        if destination == "payments":
            return self._client.get_queue_receiver(
                destination, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
            )
        return self._client.get_subscription_receiver(
            destination, "all", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=1
        )

    def run(self, destination: str, stop: threading.Event) -> None:
        # One consumer identity (one inbox) whichever entity an event arrives on.
        helper = IdempotentConsumer(
            "demo-consumer", self._inbox, lambda event: self._show(event, destination)
        )
        while not stop.is_set():
            # Opened by the first receive, not by `with`: only then does max_wait_time bound
            # the wait for a session (the SDK's open on enter waits for the server's timeout).
            receiver = self._receiver(destination)
            try:
                while batch := receiver.receive_messages(max_message_count=50, max_wait_time=0.5):
                    for message in batch:
                        event = event_from_message(
                            b"".join(message.body),
                            message.application_properties or {},
                            message.content_type,
                        )
                        if helper.handle(event).duplicate:
                            self._ledger.duplicate()
                        receiver.complete_message(message)
            except OperationTimeoutError:
                continue  # no session has messages right now
            except ServiceBusError as exc:
                print(f"  consumer: {type(exc).__name__}, reconnecting", file=sys.stderr)
                stop.wait(0.5)
            finally:
                receiver.close()
