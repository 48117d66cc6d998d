"""The demo consumer: session receivers through the idempotent consumer helper.

Every order and payment stream is its own session, so the consumer visits many sessions with a
few events each. What one visit costs with azure-servicebus 7.15 on loopback (measured): opening
a receiver takes ~0.45 s (a new connection, CBS, then the attach; the SDK reads one frame per
50 ms while it opens), the first receive returns ~0.2 s after the first message (the SDK waits
that long for more), and ``close()`` then waits up to 1 s for the SDK's keep-alive thread to
end its sleep, although the link and connection are already closed at its start. Handling an
event (inbox read + write in Cosmos DB, complete) takes ~20 ms. So one receiver manages about
one session a second whatever the load: the consumer keeps up by running many receivers in
parallel (``run`` in several threads), by leaving a session as soon as a receive comes back
short, and by closing receivers in the background.
"""

from __future__ import annotations

import threading

from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusError

from devstack.demo.ledger import Ledger
from devstack.demo.printer import Printer
from events.adapters.cosmos.stores import CosmosInbox
from events.core.consumer import IdempotentConsumer
from events.core.envelope import IntegrationEvent
from events.core.messages import event_from_message

__all__ = ["Consumer"]

#: How long a receiver waits for a session with messages. The SDK sends it to the broker as
#: ``com.microsoft:timeout``; the broker answers then with "no session" (OperationTimeoutError).
SESSION_WAIT_SECONDS = 3.0
#: The receive that opens the receiver waits longer than the broker, so the broker answers first.
_FIRST_RECEIVE_SECONDS = SESSION_WAIT_SECONDS + 2.0
_MORE_SECONDS = 0.2
_BATCH = 50


class Consumer:
    """Receives session by session through the idempotent consumer helper.

    ``run(destination, stop)`` is one receiving loop; run it in as many threads as sessions
    should be served at once.
    """

    def __init__(
        self,
        client: ServiceBusClient,
        inbox: CosmosInbox,
        ledger: Ledger,
        *,
        quiet: bool,
        printer: Printer | None = None,
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._ledger = ledger
        self._quiet = quiet
        self._printer = printer if printer is not None else Printer()

    def _show(self, event: IntegrationEvent, destination: str) -> None:
        self._ledger.got(event, destination)
        if not self._quiet:
            self._printer.line(
                f"  received {event.type:<18} {event.subject:<22} seq={event.sequence}"
            )

    def _receiver(self, destination: str) -> ServiceBusReceiver:
        wait = SESSION_WAIT_SECONDS
        if destination == "payments":
            return self._client.get_queue_receiver(
                destination, session_id=NEXT_AVAILABLE_SESSION, max_wait_time=wait
            )
        return self._client.get_subscription_receiver(
            destination, "all", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=wait
        )

    def run(self, destination: str, stop: threading.Event) -> None:
        # One consumer identity (one inbox) whichever entity an event arrives on.
        helper = IdempotentConsumer(
            "demo-consumer", self._inbox, lambda event: self._show(event, destination)
        )
        closing: list[threading.Thread] = []
        try:
            while not stop.is_set():
                closing = [t for t in closing if t.is_alive()]
                receiver = self._receiver(destination)
                try:
                    self._visit(receiver, helper)
                except OperationTimeoutError:
                    pass  # no session had messages within SESSION_WAIT_SECONDS
                except ServiceBusError as exc:
                    if not stop.is_set():
                        self._printer.error(
                            f"  consumer {destination}: {type(exc).__name__}, reconnecting"
                        )
                        stop.wait(0.5)
                finally:
                    # The link and connection close at once; only the SDK's wait for its
                    # keep-alive thread is left, and the next session need not wait for it.
                    closer = threading.Thread(target=receiver.close, daemon=True)
                    closer.start()
                    closing.append(closer)
        finally:
            for closer in closing:
                closer.join(timeout=5)

    def _visit(self, receiver: ServiceBusReceiver, helper: IdempotentConsumer) -> None:
        """Take the next session with messages, handle what it has, and leave it."""
        # The first receive opens the receiver: it waits for a session, then for its messages.
        batch = receiver.receive_messages(
            max_message_count=_BATCH, max_wait_time=_FIRST_RECEIVE_SECONDS
        )
        while batch:
            for message in batch:
                event = event_from_message(
                    b"".join(message.body),
                    message.application_properties or {},
                    message.content_type,
                )
                if helper.handle(event).duplicate:
                    self._ledger.duplicate()
                receiver.complete_message(message)
            if len(batch) < _BATCH:
                # The broker sends all a session has; a short batch means it is empty now.
                # Later messages of it go to whichever receiver is waiting for a session.
                return
            batch = receiver.receive_messages(max_message_count=_BATCH, max_wait_time=_MORE_SECONDS)
