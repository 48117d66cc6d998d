"""The AsyncAPI 3.0 document of this deployment, generated from the declaration and the contracts.

Nothing in it is written per contract or per destination: a contract registered, or a queue,
topic, subscription or route declared, appears in the next ``python -m events schemas`` with no
code change. What the document says, and where it comes from:

- ``channels``: one per declared queue and topic (address: the entity name), and one per topic
  subscription (address ``<topic>/Subscriptions/<name>``, the entity path a receiver links to).
  AsyncAPI has no subscription object and its ``amqp`` bindings describe AMQP 0-9-1 exchanges,
  not Service Bus, so the Service Bus settings and rules travel in an ``x-servicebus`` extension.
- ``messages``: one per contract (event type and version). A channel lists the messages the
  routes send to it (``Router``, as the relay routes); a subscription lists those its rules may
  admit (a rule that cannot be decided from the event type, such as a SQL filter, admits all).
- ``payload``: the contract's JSON Schema (the CloudEvents ``data``), stated as JSON Schema
  draft-07 through ``schemaFormat``: contracts are emitted as draft 2020-12, and a keyword
  whose meaning differs between the two is refused here rather than published wrong.
- ``headers``: the application properties ``to_message`` writes (``cloudEvents:`` + attribute,
  binary content mode), read from the mapping itself with a probe event, so the document
  cannot drift from the wire. ``correlationId`` is the event id; the Service Bus message id,
  session id (the partition key: order per aggregate) and subject are in ``x-servicebus``.
- ``operations``: ``send`` on each queue and topic the relay routes events to, and
  ``receive`` on the subscription of each consumer the declaration runs in the app
  (``serviceBus.consumers``); other consumers read the subscription and queue channels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from events.core.contracts import EventPayload, PublicData
from events.core.envelope import IntegrationEvent
from events.core.messages import Router, to_message
from events.deployment.catalog import Deployment
from events.deployment.topology import (
    CorrelationFilter,
    QueueSpec,
    SubscriptionSpec,
    TopicSpec,
)

__all__ = [
    "ASYNCAPI_FILE_NAME",
    "PAYLOAD_SCHEMA_FORMAT",
    "asyncapi_document",
    "asyncapi_text",
    "draft07_schema",
]

ASYNCAPI_FILE_NAME: Final = "asyncapi.json"
ASYNCAPI_VERSION: Final = "3.0.0"
PAYLOAD_SCHEMA_FORMAT: Final = "application/schema+json;version=draft-07"
HEADERS_SCHEMA: Final = "CloudEventsHeaders"
CORRELATION_ID: Final = "eventId"
SECURITY_SCHEME: Final = "entraId"
SERVER: Final = "azure"
#: The token audience of the Service Bus data plane.
SERVICEBUS_SCOPE: Final = "https://servicebus.azure.net/.default"

#: Keywords of JSON Schema 2019-09/2020-12 that draft-07 lacks or reads differently.
_NOT_DRAFT07: Final = frozenset(
    {
        "$anchor",
        "$dynamicAnchor",
        "$dynamicRef",
        "$recursiveAnchor",
        "$recursiveRef",
        "$vocabulary",
        "dependentRequired",
        "dependentSchemas",
        "maxContains",
        "minContains",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
#: Keywords whose value maps names to subschemas (the names are not keywords).
_SCHEMA_MAPS: Final = frozenset({"$defs", "definitions", "properties", "patternProperties"})
#: Keywords whose value is instance data, never a schema: copied as is.
_DATA: Final = frozenset({"const", "default", "enum", "examples"})
_ID_UNSAFE = re.compile(r"[^\w.\-]")

_ATTRIBUTE_DESCRIPTIONS: Final = {
    "specversion": "CloudEvents version.",
    "id": "Event id, deterministic: a retry sends the same id. Also the Service Bus message "
    "id (duplicate detection) and the key of a consumer's inbox.",
    "source": "Where the event comes from (the deployment's CloudEvents source URI).",
    "type": "Event type: the contract's name.",
    "subject": "The aggregate the event is about.",
    "time": "When the change happened (RFC 3339).",
    "dataschema": "URI of the contract's JSON Schema.",
    "sequence": "Position within the aggregate; sorts as text in change order.",
    "traceparent": "W3C trace context of the change.",
    "partitionkey": "The aggregate's partition key; also the Service Bus session id, so the "
    "events of one aggregate arrive in order.",
}


_MESSAGE_DESCRIPTION: Final = (
    "A CloudEvents 1.0 event in binary content mode: the contract's data is the JSON body, "
    "the context attributes are application properties. The Service Bus message id is the "
    "value of {messageId} (duplicate detection), the session id that of {sessionId} (the "
    "aggregate: its events arrive in order), the subject that of {subject}."
)


def draft07_schema(schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A contract's draft 2020-12 schema as draft-07: ``$schema`` dropped (``schemaFormat``
    says the dialect), ``$defs`` renamed ``definitions`` with its references. Raises
    ValueError naming ``where`` and the keyword when the schema uses one draft-07 reads
    differently: publishing it as draft-07 would promise a contract that is not enforced."""
    out: dict[str, Any] = _translate(schema, where)
    out.pop("$schema", None)
    return out


def _translate(node: object, where: str) -> Any:
    if isinstance(node, list):
        return [_translate(item, where) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_DRAFT07:
            raise ValueError(f"{where}: keyword {key!r} has no draft-07 equivalent")
        if key in _DATA:
            out[key] = value
        elif key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", "#/definitions/", 1)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            name = "definitions" if key == "$defs" else key
            out[name] = {k: _translate(v, where) for k, v in value.items()}
        else:
            out[key] = _translate(value, where)
    return out


def _component_id(text: str) -> str:
    """A component or channel key (AsyncAPI allows ``[\\w.-]``)."""
    return _ID_UNSAFE.sub("_", text)


def _message_id(model: type[EventPayload]) -> str:
    return _component_id(f"{model.event_type}.v{model.version}")


@dataclass(frozen=True)
class _Wire:
    """What ``to_message`` does with an event, read from the mapping itself."""

    #: Application property -> the envelope attribute whose value it carries.
    headers: dict[str, str]
    #: Application properties present on every message (the others only when set).
    required: tuple[str, ...]
    #: Service Bus property (messageId, sessionId, subject) -> the header carrying its value.
    broker: dict[str, str]
    content_type: str


def _probe(*, complete: bool) -> IntegrationEvent:
    """An event whose attributes all have distinct values (the optional ones only when
    ``complete``), so each value on the message names the attribute it came from."""
    return IntegrationEvent(
        id="probe-id",
        source="probe-source",
        type="probe-type",
        subject="probe-subject",
        time=datetime(2000, 1, 2, 3, 4, 5, tzinfo=UTC),
        data=PublicData(),
        partitionkey="probe-partitionkey",
        dataschema="probe-dataschema" if complete else None,
        sequence="probe-sequence" if complete else None,
        traceparent=f"00-{'1' * 32}-{'2' * 16}-01" if complete else None,
    )


def _wire() -> _Wire:
    event = _probe(complete=True)
    by_value = {value: name for name, value in event.attributes().items()}
    full = to_message(event, Router(default="probe"))
    unknown = sorted(
        prop for prop, value in full.application_properties.items() if value not in by_value
    )
    if unknown:  # a property that carries no attribute: this module must learn what it is
        raise ValueError(f"application properties not taken from an attribute: {unknown}")
    headers = {prop: by_value[value] for prop, value in full.application_properties.items()}
    minimal = to_message(_probe(complete=False), Router(default="probe"))
    required = tuple(prop for prop in headers if prop in minimal.application_properties)

    def header_of(value: str) -> str:
        attribute = by_value[value]
        return next(prop for prop, name in headers.items() if name == attribute)

    broker = {
        "messageId": header_of(full.message_id),
        "sessionId": header_of(full.session_id),
        "subject": header_of(full.subject),
    }
    return _Wire(headers, required, broker, full.content_type)


def _attribute_schemas() -> dict[str, dict[str, Any]]:
    """Each envelope attribute's JSON Schema as a string header (``None`` variants dropped:
    an unset attribute is an absent header, not a null one)."""
    properties: dict[str, dict[str, Any]] = IntegrationEvent.model_json_schema(
        mode="serialization"
    )["properties"]
    out: dict[str, dict[str, Any]] = {}
    for name, schema in properties.items():
        variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
        merged = {k: v for k, v in variants[0].items() if k not in ("title", "default")}
        if name in _ATTRIBUTE_DESCRIPTIONS:
            merged["description"] = _ATTRIBUTE_DESCRIPTIONS[name]
        out[name] = merged
    return out


def _headers_schema(wire: _Wire) -> dict[str, Any]:
    attributes = _attribute_schemas()
    properties: dict[str, Any] = {}
    for prop, attribute in wire.headers.items():
        schema = dict(attributes[attribute])
        if not prop.endswith(f":{attribute}"):
            schema["description"] = (
                f"The {attribute} attribute again, where Service Bus tools read it."
            )
        properties[prop] = schema
    return {
        "type": "object",
        "description": "CloudEvents 1.0 context attributes as AMQP application properties "
        "(binary content mode); the data is the body, datacontenttype the content type.",
        "required": list(wire.required),
        "properties": properties,
    }


def _header_of(wire: _Wire, attribute: str) -> str:
    return next(prop for prop, name in wire.headers.items() if name == attribute)


def _message(model: type[EventPayload], wire: _Wire) -> dict[str, Any]:
    key = _message_id(model)
    message: dict[str, Any] = {
        "name": model.event_type,
        "title": f"{model.event_type} v{model.version}",
        "description": _MESSAGE_DESCRIPTION.format(**wire.broker),
        "contentType": wire.content_type,
        "headers": {
            "allOf": [
                {"$ref": f"#/components/schemas/{HEADERS_SCHEMA}"},
                {
                    "type": "object",
                    "properties": {
                        _header_of(wire, "type"): {"const": model.event_type},
                        _header_of(wire, "dataschema"): {"const": model.schema_uri()},
                    },
                },
            ]
        },
        "payload": {"$ref": f"#/components/schemas/{key}"},
        "correlationId": {"$ref": f"#/components/correlationIds/{CORRELATION_ID}"},
        "x-servicebus": {name: f"$message.header#/{prop}" for name, prop in wire.broker.items()},
    }
    doc = model.__dict__.get("__doc__")
    if doc:
        message["summary"] = " ".join(doc.split())
    return message


def _admits(rule_filter: object, model: type[EventPayload], wire: _Wire) -> bool:
    """False only when the rule can never match this contract's messages."""
    if not isinstance(rule_filter, CorrelationFilter):
        return True  # a SQL filter is not evaluated: it may admit anything
    known = {
        _header_of(wire, "type"): model.event_type,
        _header_of(wire, "specversion"): "1.0",
        _header_of(wire, "dataschema"): model.schema_uri(),
    }
    if rule_filter.subject is not None and rule_filter.subject != model.event_type:
        return False
    if rule_filter.content_type is not None and rule_filter.content_type != wire.content_type:
        return False
    if rule_filter.correlation_id is not None:
        return False  # the relay sets no correlation id
    return all(
        known[name] == value for name, value in rule_filter.properties.items() if name in known
    )


def _subscribed(
    subscription: SubscriptionSpec, models: Iterable[type[EventPayload]], wire: _Wire
) -> list[type[EventPayload]]:
    if not subscription.rules:
        return list(models)
    return [m for m in models if any(_admits(r.filter, m, wire) for r in subscription.rules)]


def _message_refs(models: Iterable[type[EventPayload]]) -> dict[str, Any]:
    return {_message_id(m): {"$ref": f"#/components/messages/{_message_id(m)}"} for m in models}


def _settings(spec: TopicSpec | QueueSpec | SubscriptionSpec) -> dict[str, Any]:
    settings: dict[str, Any] = spec.model_dump(
        mode="json", by_alias=True, exclude={"name", "subscriptions"}, exclude_defaults=True
    )
    return settings


def _channels(
    deployment: Deployment, wire: _Wire
) -> tuple[dict[str, Any], dict[str, list[type[EventPayload]]]]:
    """Channels by id, and the contracts the relay sends to each channel id."""
    service_bus = deployment.topology.service_bus
    router = Router(default=service_bus.default_destination, routes=service_bus.routes)
    routed: dict[str, list[type[EventPayload]]] = {}
    for model in deployment.contracts:
        routed.setdefault(router.destination(model.event_type), []).append(model)
    channels: dict[str, Any] = {}
    sent: dict[str, list[type[EventPayload]]] = {}

    def add(channel_id: str, channel: dict[str, Any]) -> None:
        if channel_id in channels:
            raise ValueError(f"two entities give the AsyncAPI channel id {channel_id!r}")
        channels[channel_id] = channel

    for topic in service_bus.topics:
        models = routed.get(topic.name, [])
        topic_id = _component_id(topic.name)
        add(
            topic_id,
            {
                "address": topic.name,
                "title": f"Topic {topic.name}",
                "description": "The relay sends here; consumers receive from its subscriptions.",
                "messages": _message_refs(models),
                "x-servicebus": {
                    "entity": "topic",
                    **_settings(topic),
                    "subscriptions": [s.name for s in topic.subscriptions],
                },
            },
        )
        if models:
            sent[topic_id] = models
        for subscription in topic.subscriptions:
            add(
                _component_id(f"{topic.name}.{subscription.name}"),
                {
                    "address": f"{topic.name}/Subscriptions/{subscription.name}",
                    "title": f"Subscription {topic.name}/{subscription.name}",
                    "description": "Consumers receive here: the topic's messages its rules "
                    "admit."
                    + (
                        " Sessions: one aggregate at a time, in order."
                        if subscription.requires_session
                        else ""
                    ),
                    "messages": _message_refs(_subscribed(subscription, models, wire)),
                    "x-servicebus": {
                        "entity": "subscription",
                        "topic": topic.name,
                        **_settings(subscription),
                    },
                },
            )
    for queue in service_bus.queues:
        models = routed.get(queue.name, [])
        queue_id = _component_id(queue.name)
        add(
            queue_id,
            {
                "address": queue.name,
                "title": f"Queue {queue.name}",
                "description": "The relay sends here; consumers receive from it."
                + (
                    " Sessions: one aggregate at a time, in order."
                    if queue.requires_session
                    else ""
                ),
                "messages": _message_refs(models),
                "x-servicebus": {"entity": "queue", **_settings(queue)},
            },
        )
        if models:
            sent[queue_id] = models
    return channels, sent


def _operations(sent: Mapping[str, list[type[EventPayload]]]) -> dict[str, Any]:
    return {
        f"send-{channel_id}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"The relay publishes these events to {channel_id}.",
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{_message_id(m)}"} for m in models
            ],
        }
        for channel_id, models in sent.items()
    }


def _receive_operations(deployment: Deployment, channels: Mapping[str, Any]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for consumer in deployment.consumers:
        channel_id = _component_id(f"{consumer.topic}.{consumer.subscription}")
        operations[f"receive-{_component_id(consumer.name)}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"The consumer {consumer.name} ({consumer.mode}) handles these events "
            "once each, in order per session.",
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{key}"}
                for key in channels[channel_id]["messages"]
            ],
            "x-servicebus": {"function": consumer.function_name, "handler": consumer.handler_path},
        }
    return operations


def asyncapi_document(deployment: Deployment, *, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``deployment`` (``version``: the info version)."""
    wire = _wire()
    channels, sent = _channels(deployment, wire)
    schemas: dict[str, Any] = {HEADERS_SCHEMA: _headers_schema(wire)}
    messages: dict[str, Any] = {}
    published = deployment.contracts.schemas()  # the files `schemas/` holds, as text
    for model in deployment.contracts:
        key = _message_id(model)
        schema = json.loads(published[model.schema_file_name()])
        schemas[key] = {
            "schemaFormat": PAYLOAD_SCHEMA_FORMAT,
            "schema": draft07_schema(schema, f"contract {model.event_type} v{model.version}"),
        }
        messages[key] = _message(model, wire)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Integration events",
            "version": version,
            "description": "CloudEvents 1.0 integration events the relay publishes from the "
            f"Cosmos DB database {deployment.topology.cosmos.database!r} to Service Bus. "
            "Generated from the declaration and the contracts by `python -m events schemas`.",
        },
        "defaultContentType": wire.content_type,
        "servers": {
            SERVER: {
                "host": "{namespace}.servicebus.windows.net",
                "protocol": "amqps",
                "protocolVersion": "1.0",
                "title": "Azure Service Bus",
                "description": "AMQP 1.0 over TLS (port 5671). The relay's setting "
                "RELAY_SERVICEBUS__fullyQualifiedNamespace names the host.",
                "variables": {"namespace": {"description": "The Service Bus namespace name."}},
                "security": [{"$ref": f"#/components/securitySchemes/{SECURITY_SCHEME}"}],
            }
        },
        "channels": channels,
        "operations": {**_operations(sent), **_receive_operations(deployment, channels)},
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                CORRELATION_ID: {
                    "description": "The event id: deterministic, the Service Bus message id "
                    "(duplicate detection) and the key of a consumer's inbox.",
                    "location": f"$message.header#/{_header_of(wire, 'id')}",
                }
            },
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "oauth2",
                    "description": "Microsoft Entra ID tokens only: shared access keys are "
                    "disabled on the namespace. Applications in Azure use a managed identity; "
                    "the relay holds Azure Service Bus Data Sender on each entity, a consumer "
                    "needs Data Receiver on its queue or subscription.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
                            "availableScopes": {
                                SERVICEBUS_SCOPE: "The Service Bus data plane; the role "
                                "assignment decides what the identity may do."
                            },
                        }
                    },
                    "scopes": [SERVICEBUS_SCOPE],
                }
            },
        },
    }


def asyncapi_text(deployment: Deployment, *, version: str) -> str:
    """The document as stable JSON text (two-space indent, trailing newline)."""
    return json.dumps(asyncapi_document(deployment, version=version), indent=2) + "\n"
