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

Receiving and settlement are the package's (``events.adapters.receiving``), and each message
goes through ``events.hosts.consumers.consume`` as in the Functions app and
``python -m events consume``: complete when handled or a duplicate, abandon on a transient
error, dead-letter on a permanent one.
"""

from __future__ import annotations

import threading

from azure.servicebus import ServiceBusClient

from devstack.demo.ledger import Ledger
from devstack.demo.printer import Printer
from events.adapters.cosmos.stores import CosmosInbox
from events.adapters.receiving import SessionReceiving
from events.core.consumer import IdempotentConsumer
from events.core.envelope import IntegrationEvent
from events.core.handling import Received
from events.hosts.consumers import consume

__all__ = ["Consumer"]

#: The queue the demo receives from directly; every other destination through ``all``.
_QUEUE = "payments"
_SUBSCRIPTION = "all"


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

    def run(self, destination: str, stop: threading.Event) -> None:
        # One consumer identity (one inbox) whichever entity an event arrives on.
        helper = IdempotentConsumer(
            "demo-consumer", self._inbox, lambda event: self._show(event, destination)
        )
        receiving = SessionReceiving(
            self._client, destination, None if destination == _QUEUE else _SUBSCRIPTION
        )

        def handle(message: Received) -> None:
            if consume(helper, message).duplicate:
                self._ledger.duplicate()

        def reconnecting(exc: BaseException) -> None:
            self._printer.error(f"  consumer {destination}: {type(exc).__name__}, reconnecting")

        receiving.run(handle, stop, reconnecting)
