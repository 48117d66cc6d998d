"""Generate the Service Bus emulator's Config.json from ``infra/topology.json``.

The emulator cannot be configured at run time: it reads every queue, topic, subscription and
rule from one JSON file at start-up. Generating that file from the topology keeps the emulator,
Bicep and the app on the same entity names.

Emulator limits (https://learn.microsoft.com/azure/service-bus-messaging/overview-emulator#known-limitations)
are enforced here: a fixed namespace name, at most 50 entities, MaxDeliveryCount 1-10 and a
message time to live of at most one hour. TTLs above one hour are CLAMPED to PT1H, so messages
expire sooner locally than in Azure (P14D there); everything else is copied unchanged.

    python -m devstack.emulator_config            # writes infra/emulator/Config.json
    python -m devstack.emulator_config --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from events.deployment.topology import (
    CorrelationFilter,
    QueueSpec,
    RuleSpec,
    SubscriptionSpec,
    TopicSpec,
    Topology,
    iso_duration_seconds,
    load_topology,
)

__all__ = [
    "CONFIG_PATH",
    "MAX_DELIVERY_COUNT",
    "MAX_ENTITIES",
    "MAX_TTL",
    "NAMESPACE",
    "EmulatorLimitError",
    "generate",
    "main",
    "render",
]

NAMESPACE: Final = "sbemulatorns"
MAX_ENTITIES: Final = 50
MAX_DELIVERY_COUNT: Final = 10
MAX_TTL: Final = "PT1H"
CONFIG_PATH: Final = Path(__file__).resolve().parent.parent / "infra" / "emulator" / "Config.json"

_MAX_TTL_SECONDS: Final = iso_duration_seconds(MAX_TTL)


class EmulatorLimitError(ValueError):
    """The topology asks for something the emulator cannot hold (too many entities, ...)."""


def _ttl(value: str) -> str:
    return MAX_TTL if iso_duration_seconds(value) > _MAX_TTL_SECONDS else value


def _delivery_count(owner: str, value: int) -> int:
    if not 1 <= value <= MAX_DELIVERY_COUNT:
        raise EmulatorLimitError(
            f"{owner}: MaxDeliveryCount {value} is outside the emulator's 1-{MAX_DELIVERY_COUNT}"
        )
    return value


def _rule(rule: RuleSpec) -> dict[str, Any]:
    spec = rule.filter
    if isinstance(spec, CorrelationFilter):
        fields: dict[str, Any] = {}
        # The emulator uses the AMQP/ARM name "Label" for what the SDK calls subject.
        for key, value in (
            ("Label", spec.subject),
            ("CorrelationId", spec.correlation_id),
            ("ContentType", spec.content_type),
            ("SessionId", spec.session_id),
        ):
            if value is not None:
                fields[key] = value
        if spec.properties:
            fields["Properties"] = dict(spec.properties)
        properties: dict[str, Any] = {"FilterType": "Correlation", "CorrelationFilter": fields}
    else:
        properties = {"FilterType": "Sql", "SqlFilter": {"SqlExpression": spec.expression}}
    return {"Name": rule.name, "Properties": properties}


def _subscription(topic: TopicSpec, sub: SubscriptionSpec) -> dict[str, Any]:
    return {
        "Name": sub.name,
        "Properties": {
            "DeadLetteringOnMessageExpiration": sub.dead_lettering_on_message_expiration,
            "DefaultMessageTimeToLive": _ttl(sub.default_message_time_to_live),
            "LockDuration": sub.lock_duration,
            "MaxDeliveryCount": _delivery_count(
                f"subscription {topic.name}/{sub.name}", sub.max_delivery_count
            ),
            "ForwardDeadLetteredMessagesTo": "",
            "ForwardTo": "",
            "RequiresSession": sub.requires_session,
        },
        "Rules": [_rule(rule) for rule in sub.rules],
    }


def _topic(topic: TopicSpec) -> dict[str, Any]:
    return {
        "Name": topic.name,
        "Properties": {
            "DefaultMessageTimeToLive": _ttl(topic.default_message_time_to_live),
            "DuplicateDetectionHistoryTimeWindow": topic.duplicate_detection_history_time_window,
            "RequiresDuplicateDetection": topic.requires_duplicate_detection,
        },
        "Subscriptions": [_subscription(topic, sub) for sub in topic.subscriptions],
    }


def _queue(queue: QueueSpec) -> dict[str, Any]:
    return {
        "Name": queue.name,
        "Properties": {
            "DeadLetteringOnMessageExpiration": queue.dead_lettering_on_message_expiration,
            "DefaultMessageTimeToLive": _ttl(queue.default_message_time_to_live),
            "DuplicateDetectionHistoryTimeWindow": queue.duplicate_detection_history_time_window,
            "ForwardDeadLetteredMessagesTo": "",
            "ForwardTo": "",
            "LockDuration": queue.lock_duration,
            "MaxDeliveryCount": _delivery_count(f"queue {queue.name}", queue.max_delivery_count),
            "RequiresDuplicateDetection": queue.requires_duplicate_detection,
            "RequiresSession": queue.requires_session,
        },
    }


def generate(topology: Topology) -> dict[str, Any]:
    """The emulator configuration for ``topology``; raises EmulatorLimitError past its limits."""
    bus = topology.service_bus
    # Counted conservatively: queues, topics and subscriptions together.
    entities = len(bus.queues) + len(bus.topics) + sum(len(t.subscriptions) for t in bus.topics)
    if entities > MAX_ENTITIES:
        raise EmulatorLimitError(
            f"the topology has {entities} queues, topics and subscriptions; "
            f"the emulator holds at most {MAX_ENTITIES}"
        )
    return {
        "UserConfig": {
            "Namespaces": [
                {
                    "Name": NAMESPACE,
                    "Queues": [_queue(queue) for queue in bus.queues],
                    "Topics": [_topic(topic) for topic in bus.topics],
                }
            ],
            "Logging": {"Type": "File"},
        }
    }


def render(topology: Topology) -> str:
    """The file's exact text: stable key order, two-space indent, trailing newline."""
    return json.dumps(generate(topology), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.emulator_config",
        description="Write the Service Bus emulator Config.json generated from the topology.",
    )
    parser.add_argument("--topology", type=Path, default=None, help="topology.json to read")
    parser.add_argument("--output", type=Path, default=CONFIG_PATH, help="Config.json to write")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the file differs"
    )
    args = parser.parse_args(argv)
    topology = load_topology() if args.topology is None else load_topology(args.topology)
    text = render(topology)
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            print(f"{output} is stale: run `make emulator-config`", file=sys.stderr)
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
