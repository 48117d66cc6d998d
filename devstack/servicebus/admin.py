"""The namespace's administration endpoint: what ``ServiceBusAdministrationClient`` calls.

The SDK's administration client speaks ATOM/XML over HTTPS to the namespace host, not AMQP, and
azure-servicebus 7.15 always uses ``https://`` there, even with ``UseDevelopmentEmulator=true``.
So this serves HTTPS, with a self-signed certificate made at start (the client passes
``connection_verify=False``, as with the Cosmos DB emulator), on its own loopback port:
``LocalServiceBus.admin_connection_string`` points there, the way the official emulator gives its
management endpoint its own port.

Served, for queues, topics, subscriptions and rules: get, list (``$skip``/``$top``), runtime
properties (message counts), create, update and delete. The broker's entities change with them:
a created queue can be sent to at once. Not served (501 ``NotImplemented``, as Service Bus
answers an unsupported request): namespace properties, authorization rules, forwarding, rule
actions. Every request runs on the broker's reactor thread (``call``), so the entities are never
read while AMQP traffic changes them.
"""

from __future__ import annotations

import datetime
import re
import ssl
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

from devstack.tls import write_self_signed
from events.deployment.topology import (
    CorrelationFilter,
    QueueSpec,
    RuleSpec,
    SqlFilter,
    SubscriptionSpec,
    TopicSpec,
    iso_duration_seconds,
)

from .entities import MessageStore, Namespace
from .errors import UnsupportedTopologyError

__all__ = ["AdminServer"]

T = TypeVar("T")
Call = Callable[[Callable[[], T]], T]

_ATOM = "http://www.w3.org/2005/Atom"
_SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
_COUNTS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_FOREVER = "P10675199DT2H48M5.4775807S"  # TimeSpan.MaxValue: Service Bus's "never"
_DEFAULTS = {
    "lockDuration": "PT1M",
    "maxDeliveryCount": "10",
    "defaultMessageTimeToLive": "P14D",
    "duplicateDetectionHistoryTimeWindow": "PT10M",
}
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_MAX_SECONDS = 10675199 * 86400
#: Description fields the broker keeps and returns but does not act on (no entity size quota,
#: no idle deletion, no express or partitioning semantics): a client reads back what it set.
_KEPT = (
    "AutoDeleteOnIdle",
    "MaxSizeInMegabytes",
    "EnableBatchedOperations",
    "UserMetadata",
    "Status",
    "SupportOrdering",
    "EnablePartitioning",
    "EnableExpress",
    "DeadLetteringOnFilterEvaluationExceptions",
)
_FORWARDS = {"ForwardTo": "forward_to", "ForwardDeadLetteredMessagesTo": "forward_dead_lettered_to"}
_UNBOUND = re.compile(r"@\w+")


class _HttpError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _seconds(value: str) -> int:
    match = _DURATION.match(value.strip())
    if match is None or value.strip() in ("P", "PT"):
        raise _HttpError(400, "BadRequest", f"Invalid duration {value!r}.")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    total = int(((parts["d"] * 24 + parts["h"]) * 60 + parts["m"]) * 60 + parts["s"])
    return min(total, _MAX_SECONDS)


def _duration(seconds: int) -> str:
    return "PT0S" if seconds == 0 else f"P{seconds // 86400}DT{seconds % 86400}S"


def _iso_seconds(value: str) -> int:
    return iso_duration_seconds(value)


def _bool(value: str | None, default: bool = False) -> bool:
    return default if value is None else value.strip().lower() == "true"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _description(body: bytes, kind: str) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise _HttpError(400, "BadRequest", f"The request body is not XML: {exc}") from exc
    for element in root.iter():
        if _local(element.tag) == kind:
            return element
    raise _HttpError(400, "BadRequest", f"The request has no {kind}.")


def _kept(element: ET.Element) -> dict[str, str]:
    """The kept fields a description sets."""
    kept: dict[str, str] = {}
    for child in element:
        tag = _local(child.tag)
        if tag in _KEPT and child.text is not None:
            kept[tag] = child.text
    return kept


def _with_kept(content: str, kept: dict[str, str]) -> str:
    """A description with the kept fields' values in place of (or after) the defaults."""
    for tag, value in kept.items():
        element = f"<{tag}>{escape(value)}</{tag}>"
        pattern = re.compile(f"<{tag}>[^<]*</{tag}>|<{tag}/>")
        if pattern.search(content):
            content = pattern.sub(_replacement(element), content, count=1)
        else:
            closing = content.rindex("</")
            content = content[:closing] + element + content[closing:]
    return content


def _fields(element: ET.Element) -> dict[str, str]:
    return {
        _local(child.tag)[0].lower() + _local(child.tag)[1:]: (child.text or "")
        for child in element
    }


# ----------------------------------------------------------------------------- XML out
def _counts(store: MessageStore | None, scheduled: int = 0) -> str:
    active = store.active_count() if store is not None else 0
    dead = store.dead_letter.available() if store and store.dead_letter else 0
    return (
        f'<CountDetails xmlns:d2p1="{_COUNTS}">'
        f"<d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount>"
        f"<d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount>"
        f"<d2p1:ScheduledMessageCount>{scheduled}</d2p1:ScheduledMessageCount>"
        "<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>"
        "<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount>"
        "</CountDetails>"
    )


def _times(created: str) -> str:
    return (
        f"<CreatedAt>{created}</CreatedAt><UpdatedAt>{created}</UpdatedAt>"
        f"<AccessedAt>{created}</AccessedAt>"
    )


def _entry(base: str, path: str, title: str, content: str) -> str:
    now = _now()
    return (
        f'<entry xmlns="{_ATOM}"><id>{escape(base + path)}</id>'
        f'<title type="text">{escape(title)}</title><published>{now}</published>'
        f"<updated>{now}</updated><author><name>local-servicebus</name></author>"
        f'<link rel="self" href="{escape(base + path)}"/>'
        f'<content type="application/xml">{content}</content></entry>'
    )


def _feed(base: str, path: str, title: str, entries: list[str]) -> str:
    return (
        f'<feed xmlns="{_ATOM}"><title type="text">{escape(title)}</title>'
        f"<id>{escape(base + path)}</id><updated>{_now()}</updated>"
        f'<link rel="self" href="{escape(base + path)}"/>{"".join(entries)}</feed>'
    )


def _delivery_xml(spec: QueueSpec | SubscriptionSpec) -> str:
    return (
        f"<LockDuration>{_duration(_iso_seconds(spec.lock_duration))}</LockDuration>"
        f"<RequiresSession>{str(spec.requires_session).lower()}</RequiresSession>"
        "<DefaultMessageTimeToLive>"
        f"{_duration(_iso_seconds(spec.default_message_time_to_live))}"
        "</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>"
        f"{str(spec.dead_lettering_on_message_expiration).lower()}"
        "</DeadLetteringOnMessageExpiration>"
    )


def _filter_xml(rule: RuleSpec) -> str:
    flt = rule.filter
    if isinstance(flt, CorrelationFilter):
        properties = "".join(
            f"<KeyValueOfstringanyType><Key>{escape(k)}</Key>"
            f'<Value xmlns:d6p1="http://www.w3.org/2001/XMLSchema" i:type="d6p1:string">'
            f"{escape(v)}</Value></KeyValueOfstringanyType>"
            for k, v in flt.properties.items()
        )
        parts = [
            ("CorrelationId", flt.correlation_id),
            ("Label", flt.subject),
            ("SessionId", flt.session_id),
            ("ContentType", flt.content_type),
        ]
        inner = "".join(f"<{tag}>{escape(v)}</{tag}>" for tag, v in parts if v is not None)
        return (
            f'<Filter i:type="CorrelationFilter">{inner}<Properties>{properties}</Properties>'
            "</Filter>"
        )
    expression = flt.expression.strip()
    kind = {"1=1": "TrueFilter", "1=0": "FalseFilter"}.get(expression.replace(" ", ""), "SqlFilter")
    return (
        f'<Filter i:type="{kind}"><SqlExpression>{escape(expression)}</SqlExpression>'
        "<CompatibilityLevel>20</CompatibilityLevel></Filter>"
    )


def _rule_xml(rule: RuleSpec) -> str:
    return (
        f'<RuleDescription xmlns="{_SB}" xmlns:i="{_XSI}">{_filter_xml(rule)}'
        f'<Action i:type="EmptyRuleAction"/><CreatedAt>{_now()}</CreatedAt>'
        f"<Name>{escape(rule.name)}</Name></RuleDescription>"
    )


_DEFAULT_RULE = RuleSpec(name="$Default", filter=SqlFilter(type="sql", expression="1=1"))


class _Admin:
    """The operations, on the reactor thread; each returns (status, XML)."""

    def __init__(self, namespace: Namespace, base: str, max_size_kb: int) -> None:
        self._ns = namespace
        self._base = base
        self._max_kb = max_size_kb
        self._created: dict[str, str] = {}
        self._kept: dict[str, dict[str, str]] = {}
        #: Subscriptions whose rules are the implicit ``$Default`` (declared without rules).
        self._default_rule: set[str] = {
            k for k, spec in namespace.subscription_specs.items() if not spec.rules
        }

    def _stamp(self, key: str) -> str:
        return self._created.setdefault(key, _now())

    # --------------------------------------------------------------- descriptions
    def _queue(self, key: str) -> str:
        spec = self._ns.queue_specs[key]
        store = self._ns.receiver_store(spec.name)
        entity = self._ns.sender_entity(spec.name)
        scheduled = len(entity.scheduled) if entity else 0
        total = (store.active_count() if store else 0) + (
            store.dead_letter.available() if store and store.dead_letter else 0
        )
        content = (
            f'<QueueDescription xmlns="{_SB}" xmlns:i="{_XSI}">'
            f"{_delivery_xml(spec)}<MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"
            "<RequiresDuplicateDetection>"
            f"{str(spec.requires_duplicate_detection).lower()}</RequiresDuplicateDetection>"
            "<DuplicateDetectionHistoryTimeWindow>"
            f"{_duration(_iso_seconds(spec.duplicate_detection_history_time_window))}"
            "</DuplicateDetectionHistoryTimeWindow>"
            f"<MaxDeliveryCount>{spec.max_delivery_count}</MaxDeliveryCount>"
            "<EnableBatchedOperations>true</EnableBatchedOperations>"
            f"<SizeInBytes>0</SizeInBytes><MessageCount>{total}</MessageCount>"
            "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/>"
            f"<Status>Active</Status>{_times(self._stamp(key))}"
            f"<SupportOrdering>true</SupportOrdering>{_counts(store, scheduled)}"
            f"<AutoDeleteOnIdle>{_FOREVER}</AutoDeleteOnIdle>"
            "<EnablePartitioning>false</EnablePartitioning>"
            "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
            f"<EnableExpress>false</EnableExpress>"
            f"<MaxMessageSizeInKilobytes>{self._max_kb}</MaxMessageSizeInKilobytes>"
            f"{self._forward_xml(store)}</QueueDescription>"
        )
        content = _with_kept(content, self._kept.get(key, {}))
        return _entry(self._base, spec.name, spec.name, content)

    def _topic(self, key: str) -> str:
        spec = self._ns.topic_specs[key]
        entity = self._ns.sender_entity(spec.name)
        scheduled = len(entity.scheduled) if entity else 0
        subscriptions = sum(1 for k in self._ns.subscription_specs if k.startswith(key + "/"))
        content = (
            f'<TopicDescription xmlns="{_SB}" xmlns:i="{_XSI}">'
            "<DefaultMessageTimeToLive>"
            f"{_duration(_iso_seconds(spec.default_message_time_to_live))}"
            "</DefaultMessageTimeToLive><MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"
            "<RequiresDuplicateDetection>"
            f"{str(spec.requires_duplicate_detection).lower()}</RequiresDuplicateDetection>"
            "<DuplicateDetectionHistoryTimeWindow>"
            f"{_duration(_iso_seconds(spec.duplicate_detection_history_time_window))}"
            "</DuplicateDetectionHistoryTimeWindow>"
            "<EnableBatchedOperations>true</EnableBatchedOperations>"
            "<SizeInBytes>0</SizeInBytes><FilteringMessagesBeforePublishing>false"
            "</FilteringMessagesBeforePublishing><IsAnonymousAccessible>false"
            "</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status>"
            f"{_times(self._stamp(key))}<SupportOrdering>true</SupportOrdering>"
            f"{_counts(None, scheduled)}<SubscriptionCount>{subscriptions}</SubscriptionCount>"
            f"<AutoDeleteOnIdle>{_FOREVER}</AutoDeleteOnIdle>"
            "<EnablePartitioning>false</EnablePartitioning>"
            "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
            "<EnableSubscriptionPartitioning>false</EnableSubscriptionPartitioning>"
            "<EnableExpress>false</EnableExpress>"
            f"<MaxMessageSizeInKilobytes>{self._max_kb}</MaxMessageSizeInKilobytes>"
            "</TopicDescription>"
        )
        content = _with_kept(content, self._kept.get(key, {}))
        return _entry(self._base, spec.name, spec.name, content)

    def _subscription(self, key: str) -> str:
        spec = self._ns.subscription_specs[key]
        topic = self._ns.topic_specs[key.split("/", 1)[0]].name
        store = self._ns.receiver_store(f"{topic}/Subscriptions/{spec.name}")
        total = (store.active_count() if store else 0) + (
            store.dead_letter.available() if store and store.dead_letter else 0
        )
        content = (
            f'<SubscriptionDescription xmlns="{_SB}" xmlns:i="{_XSI}">{_delivery_xml(spec)}'
            "<DeadLetteringOnFilterEvaluationExceptions>true"
            "</DeadLetteringOnFilterEvaluationExceptions>"
            f"<MessageCount>{total}</MessageCount>"
            f"<MaxDeliveryCount>{spec.max_delivery_count}</MaxDeliveryCount>"
            "<EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status>"
            f"{_times(self._stamp(key))}{_counts(store)}"
            f"<AutoDeleteOnIdle>{_FOREVER}</AutoDeleteOnIdle>"
            "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
            f"{self._forward_xml(store)}</SubscriptionDescription>"
        )
        content = _with_kept(content, self._kept.get(key, {}))
        return _entry(self._base, f"{topic}/Subscriptions/{spec.name}", spec.name, content)

    def _forwards(self, description: ET.Element) -> dict[str, str | None]:
        """Auto-forwarding targets (a name or an ``sb://`` address), checked to exist."""
        targets: dict[str, str | None] = dict.fromkeys(_FORWARDS.values())
        for child in description:
            tag = _local(child.tag)
            text = (child.text or "").strip()
            if tag in _FORWARDS and text:
                name = text.rstrip("/").rsplit("/", 1)[-1]
                if self._ns.sender_entity(name) is None:
                    raise _HttpError(
                        400, "BadRequest", f"The entity '{name}' to forward to does not exist."
                    )
                targets[_FORWARDS[tag]] = name
        return targets

    def _set_forwards(self, path: str, targets: dict[str, str | None]) -> None:
        store = self._ns.receiver_store(path)
        if store is None:
            return
        to, dead_lettered_to = targets["forward_to"], targets["forward_dead_lettered_to"]
        store.forward_to = None if to is None else self._ns.sender_entity(to)
        store.forward_dead_lettered_to = (
            None if dead_lettered_to is None else self._ns.sender_entity(dead_lettered_to)
        )

    def _forward_xml(self, store: MessageStore | None) -> str:
        if store is None:
            return ""
        parts = []
        if store.forward_to is not None:
            parts.append(f"<ForwardTo>{escape(self._base + store.forward_to.name)}</ForwardTo>")
        if store.forward_dead_lettered_to is not None:
            target = escape(self._base + store.forward_dead_lettered_to.name)
            parts.append(f"<ForwardDeadLetteredMessagesTo>{target}</ForwardDeadLetteredMessagesTo>")
        return "".join(parts)

    def _current(self, key: str) -> dict[str, str]:
        """The immutable settings of an existing entity, as description fields."""
        spec: QueueSpec | TopicSpec | SubscriptionSpec | None = (
            self._ns.queue_specs.get(key)
            or self._ns.topic_specs.get(key)
            or self._ns.subscription_specs.get(key)
        )
        current: dict[str, str] = {"enablePartitioning": "false"}
        if isinstance(spec, QueueSpec | SubscriptionSpec):
            current["requiresSession"] = str(spec.requires_session).lower()
        if isinstance(spec, QueueSpec | TopicSpec):
            current["requiresDuplicateDetection"] = str(spec.requires_duplicate_detection).lower()
        return current

    def _check_message_size(self, fields: dict[str, str]) -> None:
        """The namespace is Standard: the message size is the namespace's, not per entity."""
        size = fields.get("maxMessageSizeInKilobytes")
        if size and int(size) != self._max_kb:
            raise _HttpError(
                400,
                "BadRequest",
                "MaxMessageSizeInKilobytes can only be set on Premium namespaces.",
            )

    def namespace(self) -> tuple[int, str]:
        now = _now()
        content = (
            f'<NamespaceInfo xmlns="{_SB}" xmlns:i="{_XSI}"><CreatedTime>{now}</CreatedTime>'
            "<MessagingSKU>Standard</MessagingSKU><MessagingUnits>1</MessagingUnits>"
            f"<ModifiedTime>{now}</ModifiedTime><Name>local-servicebus</Name>"
            "<NamespaceType>Messaging</NamespaceType></NamespaceInfo>"
        )
        return 200, _entry(self._base, "$namespaceinfo", "local-servicebus", content)

    def _rules(self, key: str) -> tuple[RuleSpec, ...]:
        if key in self._default_rule:
            return (_DEFAULT_RULE,)
        return self._ns.subscription_specs[key].rules

    # --------------------------------------------------------------- requests
    def get(self, parts: list[str], query: dict[str, list[str]]) -> tuple[int, str]:
        skip = int(query.get("$skip", ["0"])[0])
        top = int(query.get("$top", ["100"])[0])
        lowered = [p.lower() for p in parts]
        if lowered[:1] == ["$resources"] and len(parts) == 2:
            if lowered[1] == "queues":
                keys = sorted(self._ns.queue_specs)[skip : skip + top]
                return 200, _feed(
                    self._base, "$Resources/Queues", "Queues", [self._queue(k) for k in keys]
                )
            if lowered[1] == "topics":
                keys = sorted(self._ns.topic_specs)[skip : skip + top]
                return 200, _feed(
                    self._base, "$Resources/Topics", "Topics", [self._topic(k) for k in keys]
                )
        if len(parts) == 1:
            key = lowered[0]
            if key in self._ns.queue_specs:
                return 200, self._queue(key)
            if key in self._ns.topic_specs:
                return 200, self._topic(key)
            raise _HttpError(
                404, "NotFound", f"The messaging entity '{parts[0]}' could not be found."
            )
        topic_key = lowered[0]
        if len(parts) >= 2 and lowered[1] == "subscriptions":
            if topic_key not in self._ns.topic_specs:
                raise _HttpError(404, "NotFound", f"The topic '{parts[0]}' could not be found.")
            if len(parts) == 2:
                keys = sorted(
                    k for k in self._ns.subscription_specs if k.startswith(topic_key + "/")
                )
                entries = [self._subscription(k) for k in keys[skip : skip + top]]
                return 200, _feed(self._base, f"{parts[0]}/Subscriptions", "Subscriptions", entries)
            sub_key = f"{topic_key}/{lowered[2]}"
            if sub_key not in self._ns.subscription_specs:
                raise _HttpError(
                    404, "NotFound", f"The subscription '{parts[2]}' could not be found."
                )
            if len(parts) == 3:
                return 200, self._subscription(sub_key)
            if len(parts) >= 4 and lowered[3] == "rules":
                rules = self._rules(sub_key)
                path = f"{parts[0]}/Subscriptions/{parts[2]}/Rules"
                if len(parts) == 4:
                    entries = [
                        _entry(self._base, f"{path}/{r.name}", r.name, _rule_xml(r))
                        for r in rules[skip : skip + top]
                    ]
                    return 200, _feed(self._base, path, "Rules", entries)
                found = [r for r in rules if r.name.lower() == lowered[4]]
                if len(parts) == 5 and found:
                    rule = found[0]
                    return 200, _entry(
                        self._base, f"{path}/{rule.name}", rule.name, _rule_xml(rule)
                    )
                raise _HttpError(404, "NotFound", f"The rule '{parts[-1]}' could not be found.")
        raise _HttpError(501, "NotImplemented", "The local broker does not serve this request.")

    def put(self, parts: list[str], body: bytes, update: bool) -> tuple[int, str]:
        lowered = [p.lower() for p in parts]
        status = 200 if update else 201
        if len(parts) == 1:
            key = lowered[0]
            exists = key in self._ns.queue_specs or key in self._ns.topic_specs
            if exists and not update:
                raise _HttpError(
                    409, "Conflict", f"The messaging entity '{parts[0]}' already exists."
                )
            if update and not exists:
                raise _HttpError(
                    404, "NotFound", f"The messaging entity '{parts[0]}' could not be found."
                )
            kind = "QueueDescription" if b"QueueDescription" in body else "TopicDescription"
            description = _description(body, kind)
            kept = _kept(description)
            current = self._current(key) if update else None
            fields = _fields(description)
            _check(fields, current)
            self._check_message_size(fields)
            forwards = self._forwards(description)
            if kind == "QueueDescription":
                self._put_queue(parts[0], _fields(description), update)
                self._set_forwards(parts[0], forwards)
            else:
                self._put_topic(parts[0], _fields(description), update)
            self._kept[key] = {**self._kept.get(key, {}), **kept}
            return status, self._queue(key) if kind == "QueueDescription" else self._topic(key)
        if len(parts) == 3 and lowered[1] == "subscriptions":
            if lowered[0] not in self._ns.topic_specs:
                raise _HttpError(404, "NotFound", f"The topic '{parts[0]}' could not be found.")
            key = f"{lowered[0]}/{lowered[2]}"
            exists = key in self._ns.subscription_specs
            if exists and not update:
                raise _HttpError(409, "Conflict", f"The subscription '{parts[2]}' already exists.")
            if update and not exists:
                raise _HttpError(
                    404, "NotFound", f"The subscription '{parts[2]}' could not be found."
                )
            description = _description(body, "SubscriptionDescription")
            kept = _kept(description)
            _check(_fields(description), self._current(key) if update else None)
            forwards = self._forwards(description)
            self._put_subscription(parts[0], parts[2], _fields(description), description, update)
            self._set_forwards(f"{parts[0]}/Subscriptions/{parts[2]}", forwards)
            self._kept[key] = {**self._kept.get(key, {}), **kept}
            return status, self._subscription(key)
        if len(parts) == 5 and lowered[1] == "subscriptions" and lowered[3] == "rules":
            key = f"{lowered[0]}/{lowered[2]}"
            if key not in self._ns.subscription_specs:
                raise _HttpError(
                    404, "NotFound", f"The subscription '{parts[2]}' could not be found."
                )
            rule = _rule_from(parts[4], _description(body, "RuleDescription"))
            rules = list(self._rules(key))
            names = [r.name.lower() for r in rules]
            if (lowered[4] in names) != update:
                code = (409, "Conflict") if not update else (404, "NotFound")
                raise _HttpError(
                    code[0], code[1], f"The rule '{parts[4]}' conflicts or is missing."
                )
            rules = [r for r in rules if r.name.lower() != lowered[4]] + [rule]
            self._set_rules(parts[0], parts[2], tuple(rules))
            path = f"{parts[0]}/Subscriptions/{parts[2]}/Rules/{rule.name}"
            return status, _entry(self._base, path, rule.name, _rule_xml(rule))
        raise _HttpError(501, "NotImplemented", "The local broker does not serve this request.")

    def _set_rules(self, topic: str, subscription: str, rules: tuple[RuleSpec, ...]) -> None:
        try:
            self._ns.set_rules(topic, subscription, rules)
        except UnsupportedTopologyError as exc:
            raise _HttpError(400, "BadRequest", str(exc)) from exc
        self._default_rule.discard(f"{topic}/{subscription}".lower())

    def _put_queue(self, name: str, fields: dict[str, str], update: bool) -> None:
        merged = {**_DEFAULTS, **{k: v for k, v in fields.items() if v}}
        spec = QueueSpec.model_validate(
            {
                "name": name,
                "requiresDuplicateDetection": _bool(merged.get("requiresDuplicateDetection")),
                "duplicateDetectionHistoryTimeWindow": _spec_duration(
                    merged["duplicateDetectionHistoryTimeWindow"]
                ),
                "defaultMessageTimeToLive": _spec_duration(merged["defaultMessageTimeToLive"]),
                "requiresSession": _bool(merged.get("requiresSession")),
                "maxDeliveryCount": int(merged["maxDeliveryCount"]),
                "lockDuration": _spec_duration(merged["lockDuration"]),
                "deadLetteringOnMessageExpiration": _bool(
                    merged.get("deadLetteringOnMessageExpiration")
                ),
            }
        )
        if not update:
            self._ns.add_queue(spec)
            return
        # An update keeps the queue's messages: only its delivery settings change.
        store = self._ns.receiver_store(name)
        entity = self._ns.sender_entity(name)
        if store is not None:
            store.lock_seconds = float(_iso_seconds(spec.lock_duration))
            store.max_delivery_count = spec.max_delivery_count
            store.dead_letter_on_expiry = spec.dead_lettering_on_message_expiration
            store.default_ttl = float(_iso_seconds(spec.default_message_time_to_live))
        if entity is not None:
            entity.default_ttl = float(_iso_seconds(spec.default_message_time_to_live))
        self._ns.queue_specs[name.lower()] = spec

    def _put_topic(self, name: str, fields: dict[str, str], update: bool) -> None:
        merged = {**_DEFAULTS, **{k: v for k, v in fields.items() if v}}
        spec = TopicSpec.model_validate(
            {
                "name": name,
                "requiresDuplicateDetection": _bool(merged.get("requiresDuplicateDetection")),
                "duplicateDetectionHistoryTimeWindow": _spec_duration(
                    merged["duplicateDetectionHistoryTimeWindow"]
                ),
                "defaultMessageTimeToLive": _spec_duration(merged["defaultMessageTimeToLive"]),
            }
        )
        if not update:
            self._ns.add_topic(spec)
            return
        entity = self._ns.sender_entity(name)
        if entity is not None:
            entity.default_ttl = float(_iso_seconds(spec.default_message_time_to_live))
        self._ns.topic_specs[name.lower()] = spec

    def _put_subscription(
        self,
        topic: str,
        name: str,
        fields: dict[str, str],
        description: ET.Element,
        update: bool,
    ) -> None:
        merged = {**_DEFAULTS, **{k: v for k, v in fields.items() if v}}
        key = f"{topic}/{name}".lower()
        rules: tuple[RuleSpec, ...] = ()
        default_rule = True
        if update:
            rules = self._ns.subscription_specs[key].rules
            default_rule = key in self._default_rule
        else:
            for child in description:
                if _local(child.tag) == "DefaultRuleDescription":
                    rules = (_rule_from("$Default", child),)
                    default_rule = False
        spec = SubscriptionSpec.model_validate(
            {
                "name": name,
                "requiresSession": _bool(merged.get("requiresSession")),
                "maxDeliveryCount": int(merged["maxDeliveryCount"]),
                "lockDuration": _spec_duration(merged["lockDuration"]),
                "deadLetteringOnMessageExpiration": _bool(
                    merged.get("deadLetteringOnMessageExpiration")
                ),
                "defaultMessageTimeToLive": _spec_duration(merged["defaultMessageTimeToLive"]),
                "rules": [r.model_dump(by_alias=True) for r in rules],
            }
        )
        if update:
            store = self._ns.receiver_store(f"{topic}/Subscriptions/{name}")
            if store is not None:
                store.lock_seconds = float(_iso_seconds(spec.lock_duration))
                store.max_delivery_count = spec.max_delivery_count
                store.dead_letter_on_expiry = spec.dead_lettering_on_message_expiration
                store.default_ttl = float(_iso_seconds(spec.default_message_time_to_live))
            self._ns.subscription_specs[key] = spec
            return
        try:
            self._ns.add_subscription(topic, spec)
        except UnsupportedTopologyError as exc:
            raise _HttpError(400, "BadRequest", str(exc)) from exc
        if default_rule:
            self._default_rule.add(key)

    def delete(self, parts: list[str]) -> tuple[int, str]:
        lowered = [p.lower() for p in parts]
        if len(parts) == 1:
            if lowered[0] not in self._ns.queue_specs and lowered[0] not in self._ns.topic_specs:
                raise _HttpError(
                    404, "NotFound", f"The messaging entity '{parts[0]}' could not be found."
                )
            self._ns.remove_entity(parts[0])
            return 200, ""
        key = f"{lowered[0]}/{lowered[2]}" if len(parts) >= 3 else ""
        if len(parts) >= 3 and lowered[1] == "subscriptions":
            if key not in self._ns.subscription_specs:
                raise _HttpError(
                    404, "NotFound", f"The subscription '{parts[2]}' could not be found."
                )
            if len(parts) == 3:
                self._ns.remove_subscription(parts[0], parts[2])
                self._default_rule.discard(key)
                return 200, ""
            if len(parts) == 5 and lowered[3] == "rules":
                rules = self._rules(key)
                kept = tuple(r for r in rules if r.name.lower() != lowered[4])
                if len(kept) == len(rules):
                    raise _HttpError(404, "NotFound", f"The rule '{parts[4]}' could not be found.")
                self._set_rules(parts[0], parts[2], kept)
                return 200, ""
        raise _HttpError(501, "NotImplemented", "The local broker does not serve this request.")


_LIMITS = {
    # field: (lowest, highest) seconds, as Service Bus checks them
    "lockDuration": (5, 300),
    "duplicateDetectionHistoryTimeWindow": (20, 7 * 86400),
}
_IMMUTABLE = ("requiresSession", "requiresDuplicateDetection", "enablePartitioning")


def _check(fields: dict[str, str], current: dict[str, str] | None) -> None:
    """Refuse what Service Bus refuses: values out of range, and (on update) changes to
    settings fixed at creation. 400 Bad Request, as Service Bus answers."""
    for name, (low, high) in _LIMITS.items():
        value = fields.get(name)
        if value and not low <= _seconds(value) <= high:
            raise _HttpError(400, "BadRequest", f"The value supplied for {name} is out of range.")
    if current is None:
        return
    for name in _IMMUTABLE:
        if name in fields and _bool(fields[name]) != _bool(current.get(name)):
            raise _HttpError(
                400, "BadRequest", f"The value for {name} of an existing entity cannot be changed."
            )


def _spec_duration(value: str) -> str:
    """An ISO duration as the topology's validator takes it (whole seconds, D/H/M/S only)."""
    seconds = _seconds(value)
    return f"PT{seconds}S" if seconds else "PT1S"


def _rule_from(name: str, element: ET.Element) -> RuleSpec:
    flt = next((c for c in element if _local(c.tag) == "Filter"), None)
    if flt is None:
        return RuleSpec(name=name, filter=SqlFilter(type="sql", expression="1=1"))
    action = next((c for c in element if _local(c.tag) == "Action"), None)
    if action is not None and action.get(f"{{{_XSI}}}type") not in (None, "EmptyRuleAction"):
        raise _HttpError(501, "NotImplemented", "Rule actions are not implemented locally.")
    kind = flt.get(f"{{{_XSI}}}type", "SqlFilter")
    fields = _fields(flt)
    if kind == "TrueFilter":
        return RuleSpec(name=name, filter=SqlFilter(type="sql", expression="1=1"))
    if kind == "FalseFilter":
        return RuleSpec(name=name, filter=SqlFilter(type="sql", expression="1=0"))
    if kind == "SqlFilter":
        expression = _with_parameters(fields.get("sqlExpression", ""), flt)
        return RuleSpec(name=name, filter=SqlFilter(type="sql", expression=expression))
    properties: dict[str, str] = {}
    for holder in flt:
        if _local(holder.tag) != "Properties":
            continue
        for pair in holder:
            values = {_local(c.tag): c.text or "" for c in pair}
            properties[values.get("Key", "")] = values.get("Value", "")
    unsupported = [k for k in ("messageId", "to", "replyTo") if fields.get(k)]
    if unsupported:
        raise _HttpError(
            501,
            "NotImplemented",
            f"Correlation filters on {unsupported} are not implemented locally.",
        )
    return RuleSpec(
        name=name,
        filter=CorrelationFilter.model_validate(
            {
                "type": "correlation",
                "subject": fields.get("label") or None,
                "correlationId": fields.get("correlationId") or None,
                "contentType": fields.get("contentType") or None,
                "sessionId": fields.get("sessionId") or None,
                "properties": properties,
            }
        ),
    )


def _replacement(literal: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: literal


def _with_parameters(expression: str, flt: ET.Element) -> str:
    """The SQL expression with its ``@parameters`` replaced by their literal values (the local
    filter compiler takes literals only; the rule is then described with the literals)."""
    for holder in flt:
        if _local(holder.tag) != "Parameters":
            continue
        for pair in holder:
            key = next((c.text or "" for c in pair if _local(c.tag) == "Key"), "")
            value = next((c for c in pair if _local(c.tag) == "Value"), None)
            if not key or value is None:
                continue
            kind = (value.get(f"{{{_XSI}}}type") or "").rsplit(":", 1)[-1]
            text = value.text or ""
            literal = (
                text
                if kind in ("int", "long", "double", "float", "decimal")
                else ("'" + text.replace("'", "''") + "'")
            )
            expression = re.sub(re.escape(key) + r"\b", _replacement(literal), expression)
    if _UNBOUND.search(re.sub(r"'(?:[^']|'')*'", "", expression)):
        # An unbound parameter (the SDK's update_rule(filter=...) sends no parameters): the
        # filter cannot match anything, so it is kept as one that matches nothing.
        return "1=0"
    return expression


def _error_xml(error: _HttpError) -> str:
    return f"<Error><Code>{error.status}</Code><Detail>{escape(error.detail)}</Detail></Error>"


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A TLS context with a fresh self-signed certificate for 127.0.0.1 and localhost."""
    cert_file, key_file = write_self_signed(directory, "local-servicebus")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


class AdminServer:
    """The HTTPS administration endpoint of one ``LocalServiceBus``, on its own thread."""

    def __init__(
        self, namespace: Namespace, call: Call[Any], max_size_kb: int, port: int = 0
    ) -> None:
        self._namespace = namespace
        self._requested_port = port
        self._call = call
        self._max_size_kb = max_size_kb
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the administration endpoint is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            context = _self_signed(Path(directory))
        server = ThreadingHTTPServer(("127.0.0.1", self._requested_port), _handler_class(self))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._admin = _Admin(self._namespace, f"https://127.0.0.1:{self.port}/", self._max_size_kb)
        self._thread = threading.Thread(
            target=server.serve_forever, name="local-servicebus-admin", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def answer(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str]:
        url = urlparse(target)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        admin = self._admin

        def run() -> tuple[int, str]:
            try:
                if not parts:
                    raise _HttpError(501, "NotImplemented", "Namespace properties are not served.")
                if method == "GET" and [p.lower() for p in parts] == ["$namespaceinfo"]:
                    return admin.namespace()
                if method == "GET":
                    return admin.get(parts, query)
                if method == "PUT":
                    return admin.put(parts, body, update="if-match" in headers)
                if method == "DELETE":
                    return admin.delete(parts)
                raise _HttpError(405, "MethodNotAllowed", f"{method} is not allowed.")
            except _HttpError as error:
                return error.status, _error_xml(error)
            except (ValueError, KeyError) as exc:
                return 400, _error_xml(_HttpError(400, "BadRequest", str(exc)))

        result: tuple[int, str] = self._call(run)
        return result


def _handler_class(server: AdminServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, text = server.answer(self.command, self.path, body, headers)
            payload = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/atom+xml;type=entry;charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            return  # no access log: the broker logs nothing per request

    return Handler
