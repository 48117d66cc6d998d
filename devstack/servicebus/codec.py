"""AMQP bytes <-> broker records: splitting a transfer into messages, and encoding deliveries.

The SDK sends ``send_messages([...])`` and ``create_message_batch()`` as one transfer of message
format 0x80013700: an envelope whose body is one ``data`` section per encoded message. proton's
Python API does not expose the message format, so a transfer is a batch when every ``data``
section of its body decodes, completely, as an AMQP message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from proton import Data, Described, Message, symbol, timestamp, ubyte, uint, ulong

from .messages import MessageFacts, StoredMessage

__all__ = ["DecodeError", "decode_transfer", "encode_delivery", "facts_of"]

_HEADER_SECTION = 0x70
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


def _is_message(raw: bytes) -> bool:
    try:
        sections = _sections(raw)
    except DecodeError:
        return False
    return bool(sections) and all(_FIRST_SECTION <= s.code <= _LAST_SECTION for s in sections)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, memoryview | bytes):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def facts_of(raw: bytes) -> MessageFacts:
    message = Message()
    message.decode(raw)
    raw_properties: dict[Any, Any] = dict(message.properties or {})
    properties = {str(k): _plain(v) for k, v in raw_properties.items()}
    return MessageFacts(
        message_id=_text(message.id),
        session_id=_text(message.group_id),
        subject=_text(message.subject),
        correlation_id=_text(message.correlation_id),
        content_type=_text(message.content_type),
        to=_text(message.address),
        reply_to=_text(message.reply_to),
        properties=properties,
        ttl_seconds=float(message.ttl) if message.ttl else None,
        size=len(raw),
    )


def _plain(value: Any) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


def decode_transfer(raw: bytes) -> list[bytes]:
    """The encoded messages carried by one transfer: several for a batch, else the transfer."""
    sections = _sections(raw)
    bodies = [s.binary for s in sections if s.code == _DATA_SECTION]
    if bodies and all(b is not None and _is_message(b) for b in bodies):
        return [b for b in bodies if b is not None]
    return [raw]


def encode_delivery(
    stored: StoredMessage, *, locked_until: float | None, delivery_count: int
) -> bytes:
    """The bytes sent to a receiver: the original message plus the broker's annotations."""
    message = Message()
    message.decode(stored.raw)
    if isinstance(message.body, memoryview):
        message.body = bytes(message.body)
    annotations: dict[symbol, object] = dict(message.annotations or {})
    annotations[symbol("x-opt-sequence-number")] = stored.sequence_number
    annotations[symbol("x-opt-enqueued-time")] = timestamp(int(stored.enqueued_at * 1000))
    if locked_until is not None:
        annotations[symbol("x-opt-locked-until")] = timestamp(int(locked_until * 1000))
    if stored.dead_letter_source is not None:
        annotations[symbol("x-opt-deadletter-source")] = stored.dead_letter_source
    message.annotations = cast(Any, annotations)  # proton's stub wants str keys; symbols are right
    if stored.extra_properties:
        message.properties = cast(Any, {**(message.properties or {}), **stored.extra_properties})
    encoded: bytes = message.encode()
    # proton leaves out a header whose fields are defaults, but the SDK reads delivery_count
    # from the header (None without one): always send it, with an explicit count.
    header = Data()
    header.put_object(
        Described(
            ulong(_HEADER_SECTION),
            [
                bool(message.durable),
                ubyte(message.priority),
                uint(int(message.ttl * 1000)) if message.ttl else None,
                bool(message.first_acquirer),
                uint(delivery_count),
            ],
        )
    )
    rest = b"".join(
        encoded[s.start : s.end] for s in _sections(encoded) if s.code != _HEADER_SECTION
    )
    return bytes(header.encode()) + rest
