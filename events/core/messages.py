"""Pure translation of an integration event into a Service Bus message description.

CloudEvents AMQP binding, binary mode: every context attribute becomes an application property
prefixed ``cloudEvents:``, the data is the body and ``datacontenttype`` is the AMQP content type
(https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/amqp-protocol-binding.md).
Service Bus properties: message id = event id (duplicate detection), session id = partition key
(FIFO per aggregate), subject = event type. No azure.servicebus import here: the adapter turns
``OutgoingMessage`` into the SDK's message type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from events.core.envelope import IntegrationEvent

__all__ = ["CLOUDEVENTS_PREFIX", "OutgoingMessage", "Router", "event_from_message", "to_message"]

CLOUDEVENTS_PREFIX: Final = "cloudEvents:"
#: The application property Service Bus tooling reads the trace parent from.
DIAGNOSTIC_ID: Final = "Diagnostic-Id"


@dataclass(frozen=True)
class Router:
    """Event type -> topic or queue; everything else goes to the default destination."""

    default: str
    routes: Mapping[str, str] = field(default_factory=dict)

    def destination(self, event_type: str) -> str:
        return self.routes.get(event_type, self.default)


@dataclass(frozen=True)
class OutgoingMessage:
    destination: str
    message_id: str
    session_id: str
    subject: str
    content_type: str
    body: bytes
    application_properties: Mapping[str, str]
    #: What the publisher's ``check`` measured for this message (for Service Bus: the SDK
    #: message and its AMQP encoding), handed back to its ``publish`` so that nothing is built
    #: or encoded twice. Opaque to the core; not part of the message's value.
    encoding: object = field(default=None, compare=False, repr=False)

    @property
    def event_id(self) -> str:
        return self.message_id

    def measured(self, encoding: object) -> OutgoingMessage:
        """This message carrying a publisher's measurement (cheaper than dataclasses.replace,
        which a relay would pay once per event)."""
        return OutgoingMessage(
            self.destination,
            self.message_id,
            self.session_id,
            self.subject,
            self.content_type,
            self.body,
            self.application_properties,
            encoding,
        )


#: Property names of the context attributes, made once: every message of a batch shares them
#: (a relay holds a whole batch of messages before it sends any).
_PROPERTY_NAMES: Final = {
    name: f"{CLOUDEVENTS_PREFIX}{name}" for name in IntegrationEvent.model_fields if name != "data"
}


def to_message(event: IntegrationEvent, router: Router) -> OutgoingMessage:
    # datacontenttype maps to the AMQP content-type, not to an application property.
    properties = {
        _PROPERTY_NAMES.get(k) or f"{CLOUDEVENTS_PREFIX}{k}": v
        for k, v in event.attributes().items()
        if k != "datacontenttype"
    }
    if event.traceparent is not None:
        properties[DIAGNOSTIC_ID] = event.traceparent
    body = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return OutgoingMessage(
        destination=router.destination(event.type),
        message_id=event.id,
        session_id=event.partitionkey,
        subject=event.type,
        content_type=event.datacontenttype,
        body=body.encode("utf-8"),
        application_properties=MappingProxyType(properties),
    )


def event_from_message(
    body: bytes, application_properties: Mapping[str | bytes, object], content_type: str | None
) -> IntegrationEvent:
    """Read an integration event back from a received message (binary mode)."""
    attributes: dict[str, object] = {}
    for raw_key, raw_value in application_properties.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        if key.startswith(CLOUDEVENTS_PREFIX):
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            attributes[key.removeprefix(CLOUDEVENTS_PREFIX)] = value
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    attributes["data"] = json.loads(body)
    return IntegrationEvent.model_validate(attributes)
