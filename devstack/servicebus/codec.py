"""AMQP bytes <-> broker records: splitting a transfer into messages, and encoding deliveries.

The SDK sends ``send_messages([...])`` and ``create_message_batch()`` as one transfer of message
format 0x80013700: an envelope whose body is one ``data`` section per encoded message. proton's
Python API does not expose the message format, so a transfer is a batch when every ``data``
section of its body decodes, completely, as an AMQP message.

Messages are handled section by section and the body is never decoded: an ``amqp-value`` body
may hold anything AMQP can encode (a map with binary keys, which Python cannot hash once proton
turns them into memoryviews; a described value; any number of ``amqp-sequence`` or ``data``
sections), and Service Bus hands it back byte for byte. Only the header, the properties and the
application properties are read, and only the header and the annotations are rewritten.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from proton import Data, Described, symbol, timestamp, ubyte, uint, ulong

from .messages import MessageFacts, StoredMessage

__all__ = [
    "DecodeError",
    "decode_transfer",
    "encode_delivery",
    "plain",
]

_HEADER = 0x70
_DELIVERY_ANNOTATIONS = 0x71
_MESSAGE_ANNOTATIONS = 0x72
_PROPERTIES = 0x73
_APPLICATION_PROPERTIES = 0x74
_DATA_SECTION = 0x75
_FIRST_SECTION, _LAST_SECTION = 0x70, 0x78  # header .. footer


class DecodeError(ValueError):
    """A transfer that is not an AMQP message."""


@dataclass(frozen=True)
class _Section:
    code: int
    binary: bytes | None  # the payload of a data section
    start: int
    end: int


def _sections(raw: bytes) -> list[_Section]:
    sections: list[_Section] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(raw):
        data = Data()
        try:
            consumed = data.decode(cast(bytes, view[offset:]))  # proton takes any buffer
        except Exception as exc:  # proton raises its own DataException
            raise DecodeError(str(exc)) from exc
        if consumed <= 0:
            raise DecodeError("empty section")
        data.rewind()
        if data.next() != Data.DESCRIBED:
            raise DecodeError("not a described section")
        data.enter()
        data.next()
        code = data.get_ulong() if data.type() == Data.ULONG else -1
        binary: bytes | None = None
        if data.next() == Data.BINARY:
            binary = bytes(data.get_binary())
        data.exit()
        sections.append(_Section(code, binary, offset, offset + consumed))
        offset += consumed
    return sections


def _message_sections(raw: bytes) -> list[_Section] | None:
    """The sections of ``raw`` when it is an encoded message, else None."""
    try:
        sections = _sections(raw)
    except DecodeError:
        return None
    if sections and all(_FIRST_SECTION <= s.code <= _LAST_SECTION for s in sections):
        return sections
    return None


def plain(value: Any) -> Any:
    """proton's decoded value with memoryviews copied (they die with their Data object)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def _section_values(raw: bytes, codes: tuple[int, ...], sections: list[_Section]) -> list[Any]:
    """The decoded value of the first section of each of ``codes`` (None where absent), from
    the message's sections, parsed once by the caller."""
    first: dict[int, _Section] = {}
    for section in sections:
        first.setdefault(section.code, section)
    values: list[Any] = []
    for code in codes:
        found = first.get(code)
        if found is None:
            values.append(None)
            continue
        data = Data()
        data.decode(raw[found.start : found.end])
        data.rewind()
        data.next()
        described = data.get_object()
        values.append(plain(described.value) if isinstance(described, Described) else None)
    return values


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _field(values: Any, index: int) -> Any:
    return values[index] if isinstance(values, list) and len(values) > index else None


def _facts_of(raw: bytes, sections: list[_Section]) -> MessageFacts:
    properties, application, header, annotations = _section_values(
        raw, (_PROPERTIES, _APPLICATION_PROPERTIES, _HEADER, _MESSAGE_ANNOTATIONS), sections
    )
    ttl_ms = _field(header, 2)
    scheduled = None
    if isinstance(annotations, dict):
        when = annotations.get(symbol("x-opt-scheduled-enqueue-time"))
        if isinstance(when, int):
            scheduled = when / 1000.0
    return MessageFacts(
        message_id=_text(_field(properties, 0)),
        session_id=_text(_field(properties, 10)),
        subject=_text(_field(properties, 3)),
        correlation_id=_text(_field(properties, 5)),
        content_type=_text(_field(properties, 6)),
        to=_text(_field(properties, 2)),
        reply_to=_text(_field(properties, 4)),
        properties={str(k): v for k, v in application.items()}
        if isinstance(application, dict)
        else {},
        ttl_seconds=ttl_ms / 1000.0 if isinstance(ttl_ms, int) and ttl_ms > 0 else None,
        size=len(raw),
        scheduled_enqueue_time=scheduled,
    )


def _transfer_messages(raw: bytes) -> list[tuple[bytes, list[_Section]]]:
    """The encoded messages carried by one transfer (several for a batch, else the transfer),
    each with its sections, every message parsed once."""
    sections = _sections(raw)
    bodies = [s.binary for s in sections if s.code == _DATA_SECTION]
    inner: list[tuple[bytes, list[_Section]]] = []
    for body in bodies:
        parsed = None if body is None else _message_sections(body)
        if body is None or parsed is None:
            return [(raw, sections)]
        inner.append((body, parsed))
    return inner or [(raw, sections)]


def decode_transfer(raw: bytes) -> list[tuple[bytes, MessageFacts]]:
    """The encoded messages carried by one transfer (several for a batch, else the transfer),
    each with its facts."""
    return [
        (message, _facts_of(message, sections)) for message, sections in _transfer_messages(raw)
    ]


def _encode(code: int, value: Any) -> bytes:
    data = Data()
    data.put_object(Described(ulong(code), value))
    return bytes(data.encode())


def encode_delivery(
    stored: StoredMessage,
    *,
    locked_until: float | None,
    delivery_count: int,
    lock_token: uuid.UUID | None = None,
) -> bytes:
    """The bytes sent to a receiver: the original message plus the broker's annotations.

    Every section but the header, the message annotations and (when the broker adds to them)
    the application properties is copied unchanged, so the body is exactly what was sent.
    """
    raw = stored.raw
    sections = _sections(raw)
    header, annotations_value, delivery_value, application_value = _section_values(
        raw,
        (_HEADER, _MESSAGE_ANNOTATIONS, _DELIVERY_ANNOTATIONS, _APPLICATION_PROPERTIES),
        sections,
    )
    annotations: dict[Any, Any] = (
        dict(annotations_value) if isinstance(annotations_value, Mapping) else {}
    )
    annotations[symbol("x-opt-sequence-number")] = stored.sequence_number
    annotations[symbol("x-opt-enqueued-time")] = timestamp(int(stored.enqueued_at * 1000))
    if locked_until is not None:
        annotations[symbol("x-opt-locked-until")] = timestamp(int(locked_until * 1000))
    if stored.dead_letter_source is not None:
        annotations[symbol("x-opt-deadletter-source")] = stored.dead_letter_source
    if stored.deferred:
        annotations[symbol("x-opt-message-state")] = 1  # Deferred
    # The header as the sender wrote it (absent fields stay null, as Service Bus keeps them),
    # with the delivery count, which the SDK reads from the header: always sent.
    durable, priority, ttl, first_acquirer = (_field(header, i) for i in range(4))
    parts: list[bytes] = [
        _encode(
            _HEADER,
            [
                None if durable is None else bool(durable),
                None if priority is None else ubyte(int(priority)),
                None if ttl is None else uint(int(ttl)),
                None if first_acquirer is None else bool(first_acquirer),
                uint(delivery_count),
            ],
        )
    ]
    # Service Bus always sends delivery annotations (an empty map in receive-and-delete mode) and
    # puts the lock token there too (the SDK's tests compare it with the delivery tag's).
    delivery: dict[Any, Any] = dict(delivery_value) if isinstance(delivery_value, Mapping) else {}
    if lock_token is not None:
        delivery[symbol("x-opt-lock-token")] = lock_token
    parts.append(_encode(_DELIVERY_ANNOTATIONS, delivery))
    wrote_annotations = wrote_application = False
    for section in sections:
        if section.code in (_HEADER, _DELIVERY_ANNOTATIONS, _MESSAGE_ANNOTATIONS):
            continue
        if section.code > _MESSAGE_ANNOTATIONS and not wrote_annotations:
            parts.append(_encode(_MESSAGE_ANNOTATIONS, annotations))
            wrote_annotations = True
        if section.code == _APPLICATION_PROPERTIES and stored.extra_properties:
            application = application_value or {}
            parts.append(
                _encode(_APPLICATION_PROPERTIES, {**application, **stored.extra_properties})
            )
            wrote_application = True
            continue
        if (
            section.code > _APPLICATION_PROPERTIES
            and stored.extra_properties
            and not wrote_application
        ):
            parts.append(_encode(_APPLICATION_PROPERTIES, dict(stored.extra_properties)))
            wrote_application = True
        parts.append(raw[section.start : section.end])
    if not wrote_annotations:
        parts.append(_encode(_MESSAGE_ANNOTATIONS, annotations))
    if stored.extra_properties and not wrote_application:
        parts.append(_encode(_APPLICATION_PROPERTIES, dict(stored.extra_properties)))
    return b"".join(parts)
