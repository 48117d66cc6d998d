"""The Service Bus emulator Config.json is generated from the topology, fits the emulator's
documented shape and limits, and the committed file is current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack.emulator_config import (
    CONFIG_PATH,
    MAX_ENTITIES,
    EmulatorLimitError,
    generate,
    main,
    render,
)
from events.deployment.topology import Topology, iso_duration_seconds, load_topology

pytestmark = pytest.mark.infra

# https://learn.microsoft.com/azure/service-bus-messaging/overview-emulator
_QUEUE_KEYS = {
    "DeadLetteringOnMessageExpiration": bool,
    "DefaultMessageTimeToLive": str,
    "DuplicateDetectionHistoryTimeWindow": str,
    "ForwardDeadLetteredMessagesTo": str,
    "ForwardTo": str,
    "LockDuration": str,
    "MaxDeliveryCount": int,
    "RequiresDuplicateDetection": bool,
    "RequiresSession": bool,
}
_TOPIC_KEYS = {
    "DefaultMessageTimeToLive": str,
    "DuplicateDetectionHistoryTimeWindow": str,
    "RequiresDuplicateDetection": bool,
}
_SUBSCRIPTION_KEYS = {
    "DeadLetteringOnMessageExpiration": bool,
    "DefaultMessageTimeToLive": str,
    "LockDuration": str,
    "MaxDeliveryCount": int,
    "ForwardDeadLetteredMessagesTo": str,
    "ForwardTo": str,
    "RequiresSession": bool,
}
_CORRELATION_KEYS = {
    "ContentType",
    "CorrelationId",
    "Label",
    "MessageId",
    "ReplyTo",
    "ReplyToSessionId",
    "SessionId",
    "To",
    "Properties",
}


def _problems_in_properties(owner: str, props: dict[str, Any], keys: dict[str, type]) -> list[str]:
    problems = [
        f"{owner}: {k} missing or not {t.__name__}"
        for k, t in keys.items()
        if not isinstance(props.get(k), t)
    ]
    problems += [f"{owner}: unknown property {k}" for k in set(props) - set(keys)]
    if (
        isinstance(props.get("DefaultMessageTimeToLive"), str)
        and iso_duration_seconds(props["DefaultMessageTimeToLive"]) > 3600
    ):
        problems.append(f"{owner}: TTL above PT1H")
    count = props.get("MaxDeliveryCount")
    if isinstance(count, int) and not 1 <= count <= 10:
        problems.append(f"{owner}: MaxDeliveryCount {count} outside 1-10")
    return problems


def validate(config: dict[str, Any]) -> list[str]:
    """Every way ``config`` departs from the emulator's documented Config.json shape and limits."""
    problems: list[str] = []
    user = config.get("UserConfig")
    if set(config) != {"UserConfig"} or not isinstance(user, dict):
        return ["top level must be exactly {UserConfig: {...}}"]
    if user.get("Logging") != {"Type": "File"} and user.get("Logging", {}).get("Type") != "Console":
        problems.append("UserConfig.Logging.Type must be File or Console")
    namespaces = user.get("Namespaces")
    if not isinstance(namespaces, list) or len(namespaces) != 1:
        return [*problems, "exactly one namespace"]
    (namespace,) = namespaces
    if namespace.get("Name") != "sbemulatorns":
        problems.append("the namespace must be named sbemulatorns")
    entities = 0
    for queue in namespace.get("Queues", []):
        entities += 1
        problems += _problems_in_properties(
            f"queue {queue['Name']}", queue["Properties"], _QUEUE_KEYS
        )
    for topic in namespace.get("Topics", []):
        entities += 1
        problems += _problems_in_properties(
            f"topic {topic['Name']}", topic["Properties"], _TOPIC_KEYS
        )
        for sub in topic.get("Subscriptions", []):
            entities += 1
            owner = f"subscription {topic['Name']}/{sub['Name']}"
            problems += _problems_in_properties(owner, sub["Properties"], _SUBSCRIPTION_KEYS)
            for rule in sub.get("Rules", []):
                props = rule["Properties"]
                if props.get("FilterType") == "Correlation":
                    extra = set(props.get("CorrelationFilter", {})) - _CORRELATION_KEYS
                    problems += [f"{owner}: unknown correlation field {k}" for k in extra]
                elif props.get("FilterType") == "Sql":
                    if not isinstance(props.get("SqlFilter", {}).get("SqlExpression"), str):
                        problems.append(f"{owner}: Sql rule without SqlFilter.SqlExpression")
                else:
                    problems.append(f"{owner}: FilterType must be Correlation or Sql")
    if entities > MAX_ENTITIES:
        problems.append(f"{entities} entities, more than {MAX_ENTITIES}")
    return problems


def _raw_topology() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(Path(CONFIG_PATH.parent.parent / "topology.json").read_text())
    return raw


def test_emulator_config_committed_file_equals_regenerated() -> None:
    assert CONFIG_PATH.read_text(encoding="utf-8") == render(load_topology())


def test_emulator_config_check_current_file_exits_0() -> None:
    assert main(["--check"]) == 0


def test_emulator_config_check_stale_file_exits_1(tmp_path: Path) -> None:
    stale = tmp_path / "Config.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


def test_emulator_config_generated_validates_against_documented_shape() -> None:
    assert validate(generate(load_topology())) == []


def test_emulator_config_validator_rejects_out_of_limit_config() -> None:
    config = generate(load_topology())
    queue = config["UserConfig"]["Namespaces"][0]["Queues"][0]
    queue["Properties"]["MaxDeliveryCount"] = 11
    queue["Properties"]["DefaultMessageTimeToLive"] = "P1D"
    assert len(validate(config)) == 2


def test_emulator_config_every_topology_entity_present() -> None:
    topology = load_topology()
    (namespace,) = generate(topology)["UserConfig"]["Namespaces"]
    assert [q["Name"] for q in namespace["Queues"]] == [q.name for q in topology.service_bus.queues]
    assert [t["Name"] for t in namespace["Topics"]] == [t.name for t in topology.service_bus.topics]
    for topic, spec in zip(namespace["Topics"], topology.service_bus.topics, strict=True):
        assert [s["Name"] for s in topic["Subscriptions"]] == [s.name for s in spec.subscriptions]


def test_emulator_config_ttl_above_one_hour_clamped_to_pt1h() -> None:
    raw = _raw_topology()
    raw["serviceBus"]["topics"][0]["defaultMessageTimeToLive"] = "P14D"
    raw["serviceBus"]["topics"][0]["subscriptions"][0]["defaultMessageTimeToLive"] = "PT30M"
    topic = generate(Topology.model_validate(raw))["UserConfig"]["Namespaces"][0]["Topics"][0]
    assert topic["Properties"]["DefaultMessageTimeToLive"] == "PT1H"
    assert topic["Subscriptions"][0]["Properties"]["DefaultMessageTimeToLive"] == "PT30M"


def test_emulator_config_delivery_count_above_ten_raises() -> None:
    raw = _raw_topology()
    raw["serviceBus"]["queues"][0]["maxDeliveryCount"] = 11
    with pytest.raises(EmulatorLimitError, match="MaxDeliveryCount 11"):
        generate(Topology.model_validate(raw))


def test_emulator_config_more_than_fifty_entities_raises() -> None:
    raw = _raw_topology()
    template = raw["serviceBus"]["queues"][0]
    extra = [{**template, "name": f"q{i}"} for i in range(MAX_ENTITIES)]
    raw["serviceBus"]["queues"] = [template, *extra]
    with pytest.raises(EmulatorLimitError, match="at most 50"):
        generate(Topology.model_validate(raw))


def test_emulator_config_sql_rule_rendered_as_sql_filter() -> None:
    raw = _raw_topology()
    rule = {"name": "big", "filter": {"type": "sql", "expression": "amount > 100"}}
    raw["serviceBus"]["topics"][0]["subscriptions"][0]["rules"] = [rule]
    topic = generate(Topology.model_validate(raw))["UserConfig"]["Namespaces"][0]["Topics"][0]
    assert topic["Subscriptions"][0]["Rules"] == [
        {
            "Name": "big",
            "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": "amount > 100"}},
        }
    ]
