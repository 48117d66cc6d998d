"""The AsyncAPI 3.0 document ``python -m events schemas`` publishes: valid against the official
AsyncAPI 3.0.0 JSON Schema (npm ``@asyncapi/specs``, installed by ``make setup`` in
``tools/asyncapi``), complete for the declaration, and true to what the relay sends."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from events.core.contracts import ContractRegistry, EventPayload
from events.core.envelope import IntegrationEvent
from events.core.messages import Router, to_message
from events.deployment.asyncapi import (
    PAYLOAD_SCHEMA_FORMAT,
    asyncapi_document,
    draft07_schema,
)
from events.deployment.catalog import Deployment, load_deployment
from events.deployment.contracts import OrderPlacedV1, default_registry
from events.deployment.topology import DEFAULT_TOPOLOGY, Topology
from events.hosts.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tools/asyncapi/node_modules/@asyncapi/specs/schemas/3.0.0.json"
CLOUDEVENTS_REQUIRED = ("id", "source", "type", "specversion")
EXTENSIONS = ("sequence", "traceparent", "partitionkey")


class InvoiceIssuedV1(EventPayload):
    """An invoice was issued (a contract the package does not ship)."""

    event_type = "InvoiceIssued"
    version = 1

    invoice_id: str = Field(min_length=1)
    total_cents: int = Field(ge=0)


@cache
def _asyncapi_validator() -> jsonschema.protocols.Validator:
    assert SPEC.is_file(), f"{SPEC.relative_to(ROOT)} is missing: run `make setup`"
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(spec)
    validator_class.check_schema(spec)
    # A registry of its own: the validator then never fetches a reference from the network
    # (an unknown one fails as unresolvable); the file's own definitions carry their ids.
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        spec["$id"], referencing.Resource.from_contents(spec)
    )
    return validator_class(spec, registry=registry)


def _errors(document: dict[str, Any]) -> list[str]:
    return [error.message for error in _asyncapi_validator().iter_errors(document)]


def _document(deployment: Deployment | None = None) -> dict[str, Any]:
    return asyncapi_document(deployment or load_deployment(), version="1.2.3")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A local ``$ref`` followed (one level), or the node itself."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    assert isinstance(target, dict)
    return target


def _declaration(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    raw = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _queue(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "requiresDuplicateDetection": True,
        "duplicateDetectionHistoryTimeWindow": "PT30M",
        "defaultMessageTimeToLive": "P14D",
        "requiresSession": True,
        "maxDeliveryCount": 10,
        "lockDuration": "PT1M",
        "deadLetteringOnMessageExpiration": True,
    }


# --- valid, and the validation is not vacuous ---------------------------------------------


def test_asyncapi_document_of_the_declaration_is_valid_asyncapi_3() -> None:
    document = _document()

    assert document["asyncapi"] == "3.0.0"
    assert _errors(document) == []


def _drop_info_version(d: dict[str, Any]) -> None:
    del d["info"]["version"]


def _bad_action(d: dict[str, Any]) -> None:
    d["operations"]["send-payments"]["action"] = "publish"


def _bad_payload_type(d: dict[str, Any]) -> None:
    d["components"]["schemas"]["OrderPlaced.v1"]["schema"]["properties"]["orderId"]["type"] = "text"


def _bad_correlation(d: dict[str, Any]) -> None:
    d["components"]["correlationIds"]["eventId"]["location"] = "cloudEvents:id"


def _unknown_field(d: dict[str, Any]) -> None:
    d["channels"]["payments"]["subscriptions"] = ["x"]


def _server_without_protocol(d: dict[str, Any]) -> None:
    del d["servers"]["azure"]["protocol"]


@pytest.mark.parametrize(
    "break_it",
    [
        _drop_info_version,
        _bad_action,
        _bad_payload_type,
        _bad_correlation,
        _unknown_field,
        _server_without_protocol,
    ],
)
def test_asyncapi_validation_broken_document_is_invalid(
    break_it: Callable[[dict[str, Any]], None],
) -> None:
    document = _document()
    broken = copy.deepcopy(document)
    break_it(broken)

    assert _errors(document) == []
    assert _errors(broken) != []


# --- complete for the declaration ---------------------------------------------------------


def test_asyncapi_every_destination_subscription_and_event_type_appears() -> None:
    deployment = load_deployment()
    document = _document(deployment)
    service_bus = deployment.topology.service_bus
    addresses = {c["address"] for c in document["channels"].values()}

    assert {t.name for t in service_bus.topics} <= addresses
    assert {q.name for q in service_bus.queues} <= addresses
    assert {
        f"{t.name}/Subscriptions/{s.name}" for t in service_bus.topics for s in t.subscriptions
    } <= addresses
    assert {m["name"] for m in document["components"]["messages"].values()} == {
        model.event_type for model in deployment.contracts
    }


def test_asyncapi_each_event_type_is_sent_where_the_router_sends_it() -> None:
    deployment = load_deployment()
    document = _document(deployment)
    service_bus = deployment.topology.service_bus
    router = Router(service_bus.default_destination, service_bus.routes)
    sent = {
        document["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"]: {
            _resolve(document, _resolve(document, ref))["name"] for ref in op["messages"]
        }
        for op in document["operations"].values()
        if op["action"] == "send"
    }

    expected: dict[str, set[str]] = {}
    for model in deployment.contracts:
        expected.setdefault(router.destination(model.event_type), set()).add(model.event_type)
    assert sent == expected
    assert sent["payments"] == {"PaymentCaptured"}


def test_asyncapi_subscription_lists_only_the_messages_its_rules_admit() -> None:
    document = _document()

    def names(channel: str) -> set[str]:
        return {
            _resolve(document, ref)["name"]
            for ref in document["channels"][channel]["messages"].values()
        }

    assert names("integration-events.orders-placed") == {"OrderPlaced"}
    assert names("integration-events.all") == names("integration-events")
    assert document["channels"]["integration-events.orders-placed"]["x-servicebus"]["rules"] == [
        {"name": "placed-only", "filter": {"type": "correlation", "subject": "OrderPlaced"}}
    ]


def test_asyncapi_each_declared_consumer_receives_what_its_subscription_admits() -> None:
    deployment = load_deployment()
    document = _document(deployment)
    received = {
        name: (
            op["channel"]["$ref"],
            {_resolve(document, _resolve(document, ref))["name"] for ref in op["messages"]},
        )
        for name, op in document["operations"].items()
        if op["action"] == "receive"
    }

    assert set(received) == {f"receive-{c.name}" for c in deployment.consumers}
    channel, names = received["receive-order-status"]
    assert channel == "#/channels/integration-events.order-status"
    assert names == {"OrderPlaced", "OrderShipped", "OrderUpserted", "OrderDeleted"}


# --- true to the contracts and to the wire ------------------------------------------------


def test_asyncapi_payload_of_each_message_is_the_contracts_published_schema() -> None:
    document = _document()
    published = default_registry().schemas()

    for model in default_registry():
        message = document["components"]["messages"][f"{model.event_type}.v{model.version}"]
        payload = _resolve(document, message["payload"])
        expected = json.loads(published[model.schema_file_name()])
        del expected["$schema"]  # the dialect is the schemaFormat

        assert payload["schemaFormat"] == PAYLOAD_SCHEMA_FORMAT
        assert payload["schema"] == expected
        jsonschema.Draft7Validator.check_schema(payload["schema"])


def test_asyncapi_headers_carry_the_cloudevents_attributes_and_extensions() -> None:
    document = _document()
    headers = document["components"]["schemas"]["CloudEventsHeaders"]
    attributes = set(IntegrationEvent.model_fields) - {"data", "datacontenttype"}

    assert {f"cloudEvents:{name}" for name in CLOUDEVENTS_REQUIRED} <= set(headers["required"])
    assert {f"cloudEvents:{name}" for name in EXTENSIONS} <= set(headers["properties"])
    assert {f"cloudEvents:{name}" for name in attributes} <= set(headers["properties"])
    assert headers["properties"]["cloudEvents:specversion"]["const"] == "1.0"


def test_asyncapi_correlation_and_session_id_point_at_headers_that_exist() -> None:
    document = _document()
    headers = document["components"]["schemas"]["CloudEventsHeaders"]["properties"]
    correlation = document["components"]["correlationIds"]["eventId"]["location"]
    broker = document["components"]["messages"]["OrderPlaced.v1"]["x-servicebus"]

    assert correlation == "$message.header#/cloudEvents:id"
    assert broker == {
        "messageId": "$message.header#/cloudEvents:id",
        "sessionId": "$message.header#/cloudEvents:partitionkey",
        "subject": "$message.header#/cloudEvents:type",
    }
    for location in (correlation, *broker.values()):
        assert location.removeprefix("$message.header#/") in headers


def _header_validator(document: dict[str, Any], message_id: str) -> jsonschema.Draft7Validator:
    message = document["components"]["messages"][message_id]
    return jsonschema.Draft7Validator(
        {**message["headers"], "components": document["components"]},
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


_DOCUMENT = asyncapi_document(load_deployment(), version="1.2.3")
_TEXT = st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s)


@settings(max_examples=60, deadline=None)
@given(
    order_id=_TEXT,
    customer_id=_TEXT,
    total=st.integers(min_value=0, max_value=2**53),
    currency=st.text(min_size=3, max_size=3),
    lines=st.integers(min_value=1, max_value=10_000),
    sequence=st.none() | st.integers(min_value=0, max_value=2**63),
    traced=st.booleans(),
)
def test_asyncapi_describes_every_message_the_relay_builds(
    order_id: str,
    customer_id: str,
    total: int,
    currency: str,
    lines: int,
    sequence: int | None,
    traced: bool,
) -> None:
    document = _DOCUMENT
    data = OrderPlacedV1.public_data(
        {
            "orderId": order_id,
            "customerId": customer_id,
            "totalCents": total,
            "currency": currency,
            "lineCount": lines,
        }
    )
    event = IntegrationEvent(
        id="e-1",
        source="/relay/orders",
        type="OrderPlaced",
        subject=order_id[:128],
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        data=data,
        dataschema=OrderPlacedV1.schema_uri(),
        sequence=None if sequence is None else str(sequence).zfill(20),
        traceparent=f"00-{'a' * 32}-{'b' * 16}-01" if traced else None,
        partitionkey=customer_id[:128],
    )
    message = to_message(event, Router("integration-events"))
    payload = _resolve(document, document["components"]["messages"]["OrderPlaced.v1"]["payload"])

    _header_validator(document, "OrderPlaced.v1").validate(dict(message.application_properties))
    jsonschema.Draft7Validator(payload["schema"]).validate(json.loads(message.body))
    assert (
        message.content_type == document["components"]["messages"]["OrderPlaced.v1"]["contentType"]
    )


def test_asyncapi_headers_of_one_message_refuse_another_event_type() -> None:
    document = _document()
    event = IntegrationEvent(
        id="e-1",
        source="/relay/orders",
        type="OrderShipped",
        subject="o-1",
        time=datetime(2026, 1, 2, tzinfo=UTC),
        data={"orderId": "o-1", "carrier": "ups"},
        partitionkey="o-1",
    )
    properties = dict(to_message(event, Router("x")).application_properties)

    assert _header_validator(document, "OrderShipped.v1").is_valid(properties)
    assert not _header_validator(document, "OrderPlaced.v1").is_valid(properties)


# --- generated, never written per contract or destination ---------------------------------


def test_asyncapi_new_contract_queue_route_and_subscription_appear_without_code_change(
    tmp_path: Path,
) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["serviceBus"]["queues"].append(_queue("invoices"))
        raw["serviceBus"]["routes"]["InvoiceIssued"] = "invoices"
        raw["serviceBus"]["topics"][0]["subscriptions"].append(
            {
                **{k: v for k, v in _queue("x").items() if "uplicate" not in k},
                "name": "big-orders",
                "rules": [{"name": "big", "filter": {"type": "sql", "expression": "1=1"}}],
            }
        )

    registry = ContractRegistry(*default_registry(), InvoiceIssuedV1)
    document = _document(load_deployment(_declaration(tmp_path, change), registry))

    assert _errors(document) == []
    assert document["channels"]["invoices"]["messages"] == {
        "InvoiceIssued.v1": {"$ref": "#/components/messages/InvoiceIssued.v1"}
    }
    assert document["operations"]["send-invoices"]["messages"] == [
        {"$ref": "#/channels/invoices/messages/InvoiceIssued.v1"}
    ]
    invoice = document["components"]["messages"]["InvoiceIssued.v1"]
    assert invoice["summary"] == "An invoice was issued (a contract the package does not ship)."
    assert _resolve(document, invoice["payload"])["schema"]["required"] == [
        "invoiceId",
        "totalCents",
    ]
    # a SQL filter is not evaluated: the subscription may receive all the topic's messages
    big = document["channels"]["integration-events.big-orders"]
    assert big["address"] == "integration-events/Subscriptions/big-orders"
    assert big["messages"] == document["channels"]["integration-events"]["messages"]


def test_asyncapi_destination_nothing_is_routed_to_has_a_channel_and_no_send(
    tmp_path: Path,
) -> None:
    path = _declaration(tmp_path, lambda raw: raw["serviceBus"]["queues"].append(_queue("spare")))
    document = _document(load_deployment(path))

    assert document["channels"]["spare"]["messages"] == {}
    assert "send-spare" not in document["operations"]
    assert _errors(document) == []


# --- the JSON Schema dialect --------------------------------------------------------------


def test_draft07_schema_renames_defs_and_keeps_field_names_that_look_like_keywords() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"Line": {"type": "object"}},
        "properties": {
            "prefixItems": {"type": "string"},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
            "extra": {"type": "object", "default": {"prefixItems": 1, "$defs": 2}},
        },
    }

    assert draft07_schema(schema, "c") == {
        "definitions": {"Line": {"type": "object"}},
        "properties": {
            "prefixItems": {"type": "string"},
            "lines": {"type": "array", "items": {"$ref": "#/definitions/Line"}},
            "extra": {"type": "object", "default": {"prefixItems": 1, "$defs": 2}},
        },
    }


@pytest.mark.parametrize("keyword", ["prefixItems", "unevaluatedProperties", "$dynamicRef"])
def test_draft07_schema_keyword_draft07_reads_differently_is_refused(keyword: str) -> None:
    schema = {"properties": {"a": {"type": "array", keyword: [{"type": "string"}]}}}

    with pytest.raises(ValueError, match=keyword.replace("$", r"\$")):
        draft07_schema(schema, "contract X v1")


# --- the command --------------------------------------------------------------------------


def test_schemas_command_out_writes_json_schemas_and_asyncapi(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(raw: dict[str, Any]) -> None:
        raw["serviceBus"]["queues"].append(_queue("audit"))
        raw["serviceBus"]["routes"]["OrderDeleted"] = "audit"

    path = _declaration(tmp_path, change)
    out = tmp_path / "out"

    code = main(["schemas", "--out", str(out), "--declaration", str(path)])

    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([*default_registry().schemas(), "asyncapi.json"])
    document = json.loads((out / "asyncapi.json").read_text(encoding="utf-8"))
    assert _errors(document) == []
    assert document["operations"]["send-audit"]["messages"] == [
        {"$ref": "#/channels/audit/messages/OrderDeleted.v1"}
    ]
    assert capsys.readouterr().out.splitlines() == [str(out / name) for name in written]
    assert main(["schemas", "--check", "--out", str(out), "--declaration", str(path)]) == 0
    assert main(["schemas", "--check", "--out", str(out)]) == 1  # the shipped declaration


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_schemas_command_out_not_a_writable_directory_exits_2_with_one_line(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    out = blocker if where == "file" else blocker / "schemas"

    code = main(["schemas", "--out", str(out)])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(out) in err


def test_schemas_command_bad_declaration_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _declaration(tmp_path, lambda raw: raw["serviceBus"].update(defaultDestination="nope"))

    code = main(["schemas", "--out", str(tmp_path / "out"), "--declaration", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "nope" in err
    assert not (tmp_path / "out").exists()


def test_schemas_command_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["schemas", "--help"])

    assert exited.value.code == 0
    assert "asyncapi.json" in capsys.readouterr().out


# --- arbitrary declarations ---------------------------------------------------------------

_EVENT_TYPES = sorted({model.event_type for model in default_registry()})
_NAME = st.from_regex(r"[a-z0-9][a-z0-9/-]{0,15}", fullmatch=True)
_RULES: st.SearchStrategy[list[dict[str, Any]]] = st.one_of(
    st.just([]),
    st.sampled_from([*_EVENT_TYPES, "Unknown"]).map(
        lambda s: [{"name": "r", "filter": {"type": "correlation", "subject": s}}]
    ),
    st.just([{"name": "r", "filter": {"type": "sql", "expression": "sys.label = 'x'"}}]),
)


@st.composite
def _service_bus(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_NAME, min_size=1, max_size=5, unique=True))
    split = draw(st.integers(min_value=0, max_value=len(names)))
    topics = []
    for name in names[:split]:
        subscriptions = draw(st.lists(_NAME, max_size=3, unique=True))
        topics.append(
            {
                **{k: v for k, v in _queue(name).items() if k not in _DELIVERY},
                "subscriptions": [
                    {
                        **{k: v for k, v in _queue(s).items() if k not in _ENTITY},
                        "rules": draw(_RULES),
                    }
                    for s in subscriptions
                ],
            }
        )
    routes = draw(st.dictionaries(st.sampled_from(_EVENT_TYPES), st.sampled_from(names)))
    return {
        "maxMessageSizeKb": 256,
        "defaultDestination": draw(st.sampled_from(names)),
        "routes": routes,
        "topics": topics,
        "queues": [_queue(name) for name in names[split:]],
    }


_DELIVERY = {
    "requiresSession",
    "maxDeliveryCount",
    "lockDuration",
    "deadLetteringOnMessageExpiration",
}
_ENTITY = {"requiresDuplicateDetection", "duplicateDetectionHistoryTimeWindow"}
_COSMOS = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))["cosmos"]


@settings(max_examples=40, deadline=None)
@given(service_bus=_service_bus())
def test_asyncapi_any_declaration_gives_a_valid_complete_document(
    service_bus: dict[str, Any],
) -> None:
    topology = Topology.model_validate({"cosmos": _COSMOS, "serviceBus": service_bus})
    deployment = Deployment(Path("topology.json"), topology, default_registry(), ())
    document = _document(deployment)
    router = Router(service_bus["defaultDestination"], service_bus["routes"])
    by_address = {c["address"]: c for c in document["channels"].values()}

    def names(channel: dict[str, Any]) -> set[str]:
        return {_resolve(document, ref)["name"] for ref in channel["messages"].values()}

    assert _errors(document) == []
    for entity in (*service_bus["topics"], *service_bus["queues"]):
        routed = {t for t in _EVENT_TYPES if router.destination(t) == entity["name"]}
        assert names(by_address[entity["name"]]) == routed
        for subscription in entity.get("subscriptions", []):
            rules = subscription["rules"]
            admitted = {
                t
                for t in routed
                if not rules
                or rules[0]["filter"]["type"] == "sql"
                or rules[0]["filter"]["subject"] == t
            }
            assert names(by_address[f"{entity['name']}/Subscriptions/{subscription['name']}"]) == (
                admitted
            )
    assert len(document["channels"]) == len(by_address)


def test_schemas_command_two_entities_with_one_channel_id_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # subscription integration-events/all and a queue named integration-events.all
    path = _declaration(
        tmp_path, lambda raw: raw["serviceBus"]["queues"].append(_queue("integration-events.all"))
    )

    code = main(["schemas", "--out", str(tmp_path / "out"), "--declaration", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "'integration-events.all'" in err
