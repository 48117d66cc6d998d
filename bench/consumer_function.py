"""CPU per message of the declared consumer's Service Bus-triggered function vs. the consumer
helper called with the event already built.

Messages are what the relay publishes (``Relay.process`` over orders-container documents with
an in-memory publisher). The function side calls the registered function of
``consume_order_status`` with ``func.ServiceBusMessage`` objects (azure-functions' own type):
the message becomes a ``Received``, then an event (``event_from_message``: JSON body,
``cloudEvents:`` properties, pydantic validation), then goes through the idempotent helper
(in-memory inbox) to the order-status handler (in-memory container), with its log line. The
baseline hands the same events, built beforehand, to the same helper and handler. Each round
gets a fresh inbox and container, so every message is handled (no duplicate). CPU is
``time.process_time()``; rounds alternate which side goes first and the median of the
per-round ratios is printed: what reading a message costs on top of handling it.

    python -m bench.consumer_function [--messages 2000] [--rounds 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import azure.functions as func
from azure.functions.servicebus import ServiceBusMessage

from bench.publish_transfers import ORDER_KINDS, change_feed_documents
from events.core.consumer import InMemoryInbox
from events.core.envelope import IntegrationEvent
from events.core.handling import InMemoryConsumerStore
from events.core.messages import OutgoingMessage, event_from_message
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.deployment.catalog import load_deployment
from events.deployment.settings import load_settings
from events.hosts.functions import blueprint
from events.hosts.runtime import Runtime

CONSUMER = "order-status"
#: Parse-only settings: nothing connects in this bench.
_ENV = {
    "RELAY_COSMOS": "AccountEndpoint=https://127.0.0.1:1/;AccountKey=a2V5;",
    "RELAY_SERVICEBUS": "Endpoint=sb://127.0.0.1/;SharedAccessKeyName=k;SharedAccessKey=a2V5",
}


def relayed(count: int, seed: int) -> list[OutgoingMessage]:
    deployment = load_deployment()
    publisher = InMemoryPublisher(["integration-events", "payments"])
    runtime = Runtime.assemble(
        load_settings(_ENV, deployment.topology), deployment, publisher, InMemoryQuarantine()
    )
    [documents] = change_feed_documents(count, 0, seed, "consumer", ORDER_KINDS).values()
    for start in range(0, len(documents), 100):
        runtime.relay("relay_orders").process(documents[start : start + 100])
    return publisher.delivered["integration-events"]


def _runtime() -> Runtime:
    deployment = load_deployment()
    return Runtime.assemble(
        load_settings(_ENV, deployment.topology),
        deployment,
        InMemoryPublisher(["integration-events", "payments"]),
        InMemoryQuarantine(),
        inbox=InMemoryInbox(),
        consumer_stores={CONSUMER: InMemoryConsumerStore("/orderId")},
    )


def function_of(runtime: Runtime) -> Callable[[func.ServiceBusMessage], None]:
    app = func.FunctionApp()
    app.register_functions(blueprint(lambda: runtime))
    [function] = [f for f in app.get_functions() if f.get_function_name() == "consume_order_status"]
    user_function: Callable[[func.ServiceBusMessage], None] = function.get_user_function()
    return user_function


def through_function(messages: list[ServiceBusMessage]) -> float:
    consume = function_of(_runtime())
    gc.collect()
    started = time.process_time()
    for message in messages:
        consume(message)
    return time.process_time() - started


def through_helper(events: list[IntegrationEvent]) -> float:
    consumer = _runtime().consumer(CONSUMER)
    gc.collect()
    started = time.process_time()
    for event in events:
        consumer.handle(event)
    return time.process_time() - started


def _properties(message: OutgoingMessage) -> dict[str | bytes, object]:
    return dict(message.application_properties.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_function")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv or [])
    outgoing = relayed(args.messages, args.seed)
    messages = [
        ServiceBusMessage(
            body=m.body,
            application_properties=dict(m.application_properties),
            content_type=m.content_type,
            message_id=m.message_id,
            session_id=m.session_id,
            delivery_count=1,
            user_properties={},
        )
        for m in outgoing
    ]
    events = [event_from_message(m.body, _properties(m), m.content_type) for m in outgoing]
    through_function(messages[:50])  # warm-up
    through_helper(events[:50])
    ratios: list[float] = []
    function_us: list[float] = []
    helper_us: list[float] = []
    for number in range(args.rounds):
        if number % 2:
            helper = through_helper(events)
            function = through_function(messages)
        else:
            function = through_function(messages)
            helper = through_helper(events)
        ratios.append(function / helper)
        function_us.append(function / len(messages) * 1e6)
        helper_us.append(helper / len(events) * 1e6)
        print(
            f"  round {number}: function {function_us[-1]:.1f} us/message, helper "
            f"{helper_us[-1]:.1f} us/event, ratio {ratios[-1]:.2f}"
        )
    print(
        f"consumer_function messages={len(messages)} rounds={args.rounds} "
        f"function={statistics.median(function_us):.1f} us/message "
        f"helper={statistics.median(helper_us):.1f} us/event "
        f"ratio function/helper={statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
