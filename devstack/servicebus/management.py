"""Request/response operations of Service Bus's ``$management`` node that the SDK uses.

Answered: renew-lock, update-disposition, renew-session-lock, get/set-session-state,
get-message-sessions, peek-message, receive-by-sequence-number (deferred messages),
schedule-message and cancel-scheduled-message. Anything else (add/remove/enumerate-rules,
transactions) gets 501 with ``amqp:not-implemented``, which the SDK raises as a
``ServiceBusError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proton import Array, Data, timestamp

from .codec import decode_transfer, encode_delivery
from .entities import MessageStore, PublishRefusedError, SendEntity

__all__ = ["ManagementReply", "handle_management"]

_VENDOR = "com.microsoft:"
LOCK_LOST = _VENDOR + "message-lock-lost"
SESSION_LOCK_LOST = _VENDOR + "session-lock-lost"


@dataclass(frozen=True)
class ManagementReply:
    status: int
    description: str
    body: dict[str, object] | None = None
    condition: str | None = None


def _ok(body: dict[str, object] | None = None) -> ManagementReply:
    return ManagementReply(200, "OK", body if body is not None else {})


def _tokens(value: Any) -> list[uuid.UUID]:
    items: Iterable[Any] = value.elements if isinstance(value, Array) else (value or [])
    return [item if isinstance(item, uuid.UUID) else uuid.UUID(str(item)) for item in items]


def _ms(seconds: float) -> timestamp:
    return timestamp(int(seconds * 1000))


def _renew_lock(store: MessageStore, body: Mapping[str, Any], now: float) -> ManagementReply:
    expirations: list[timestamp] = []
    for token in _tokens(body.get("lock-tokens")):
        until = store.renew_lock(token, now)
        if until is None:
            return ManagementReply(410, f"The lock on message {token} was lost.", None, LOCK_LOST)
        expirations.append(_ms(until))
    return _ok({"expirations": Array(Data.NULL, Data.TIMESTAMP, *expirations)})


def _update_disposition(
    store: MessageStore, body: Mapping[str, Any], _now: float
) -> ManagementReply:
    status = str(body.get("disposition-status", "")).lower()
    reason = body.get("deadletter-reason")
    description = body.get("deadletter-description")
    settle: dict[str, Callable[[uuid.UUID], bool]] = {
        "completed": store.complete,
        "abandoned": store.abandon,
        "defered": store.defer,
        "deferred": store.defer,
        "suspended": lambda t: store.dead_letter_locked(
            t,
            None if reason is None else str(reason),
            None if description is None else str(description),
        ),
    }
    action = settle.get(status)
    if action is None:
        return ManagementReply(
            400, f"Unknown disposition status {status!r}.", None, "amqp:invalid-field"
        )
    for token in _tokens(body.get("lock-tokens")):
        if not action(token):
            return ManagementReply(410, f"The lock on message {token} was lost.", None, LOCK_LOST)
    return _ok()


def _session_id(body: Mapping[str, Any]) -> str:
    return str(body.get("session-id", ""))


def _renew_session_lock(
    store: MessageStore, body: Mapping[str, Any], now: float
) -> ManagementReply:
    until = store.renew_session(_session_id(body), now)
    if until is None:
        return ManagementReply(410, "The session lock was lost.", None, SESSION_LOCK_LOST)
    return _ok({"expiration": _ms(until)})


def _get_session_state(
    store: MessageStore, body: Mapping[str, Any], _now: float
) -> ManagementReply:
    return _ok({"session-state": store.session_state(_session_id(body))})


def _set_session_state(store: MessageStore, body: Mapping[str, Any], now: float) -> ManagementReply:
    state = body.get("session-state")
    if isinstance(state, memoryview | bytearray):
        state = bytes(state)
    elif isinstance(state, str):
        state = state.encode("utf-8")
    store.set_session_state(_session_id(body), state if isinstance(state, bytes) else None, now)
    return _ok()


def _numbers(value: Any) -> list[int]:
    items: Iterable[Any] = value.elements if isinstance(value, Array) else (value or [])
    return [int(item) for item in items]


#: .NET's DateTime.MaxValue in ms: "no cutoff" for get-message-sessions (azure-servicebus
#: ``_session_browser.py``).
_MAX_DATETIME_MS = 253402300800000

#: Locks taken through ``$management`` belong to no receiver link; they end at lock expiry.
_MANAGEMENT_OWNER = 0


def _receive_by_sequence_number(
    store: MessageStore, body: Mapping[str, Any], now: float
) -> ManagementReply:
    session = body.get("session-id")
    session_id = None if session is None else str(session)
    delete = int(body.get("receiver-settle-mode", 1)) == 0  # 0: first = receive-and-delete
    found = []
    for number in _numbers(body.get("sequence-numbers")):
        message = store.deferred(number)
        if message is None or (session_id is not None and message.facts.session_id != session_id):
            return ManagementReply(
                404,
                f"Failed to retrieve the deferred message with sequence number {number}.",
                None,
                "com.microsoft:message-not-found",
            )
        found.append(message)
    encoded: list[dict[str, object]] = []
    for message in found:
        lock = store.receive_deferred(message, _MANAGEMENT_OWNER, now, delete)
        item: dict[str, object] = {
            "message": encode_delivery(
                message,
                locked_until=None if lock is None else lock.locked_until,
                delivery_count=message.delivery_count,
                lock_token=None if lock is None else lock.token,
            )
        }
        if lock is not None:
            item["lock-token"] = lock.token
        encoded.append(item)
    return _ok({"messages": encoded})


def _get_message_sessions(
    store: MessageStore, body: Mapping[str, Any], _now: float
) -> ManagementReply:
    skip = int(body.get("skip", 0))
    top = int(body.get("top", 100))
    cutoff = body.get("last-updated-time")
    # DateTime.MaxValue (what the SDK sends without a cutoff) asks for the default listing.
    after = None if cutoff is None or int(cutoff) >= _MAX_DATETIME_MS else int(cutoff) / 1000
    ids = store.session_ids(after)[skip : skip + top]
    if not ids:
        return ManagementReply(204, "No sessions.", None, "com.microsoft:session-not-found")
    return _ok({"skip": skip + len(ids), "sessions-ids": Array(Data.NULL, Data.STRING, *ids)})


def _schedule(entity: SendEntity, body: Mapping[str, Any], now: float) -> ManagementReply:
    messages: list[tuple[bytes, Any]] = []
    for item in body.get("messages") or []:
        raw = item.get("message") if isinstance(item, Mapping) else None
        if not isinstance(raw, bytes | bytearray | memoryview):
            return ManagementReply(
                400, "A scheduled message has no 'message'.", None, "amqp:invalid-field"
            )
        messages.extend(decode_transfer(bytes(raw)))
    try:
        _result, numbers = entity.schedule(messages, now)
    except PublishRefusedError as refused:
        return ManagementReply(400, refused.description, None, refused.condition)
    return _ok({"sequence-numbers": Array(Data.NULL, Data.LONG, *numbers)})


def _cancel(entity: SendEntity, body: Mapping[str, Any], _now: float) -> ManagementReply:
    entity.cancel(_numbers(body.get("sequence-numbers")))
    return _ok()


def _peek(store: MessageStore, body: Mapping[str, Any], _now: float) -> ManagementReply:
    start = int(body.get("from-sequence-number", 0))
    count = int(body.get("message-count", 1))
    session = body.get("session-id")
    found = store.peek(start, count, None if session is None else str(session))
    if not found:
        return ManagementReply(204, "No messages.")
    encoded = [
        {"message": encode_delivery(m, locked_until=None, delivery_count=m.delivery_count)}
        for m in found
    ]
    return _ok({"messages": encoded})


_OPERATIONS: dict[str, Callable[[MessageStore, Mapping[str, Any], float], ManagementReply]] = {
    _VENDOR + "renew-lock": _renew_lock,
    _VENDOR + "update-disposition": _update_disposition,
    _VENDOR + "renew-session-lock": _renew_session_lock,
    _VENDOR + "get-session-state": _get_session_state,
    _VENDOR + "set-session-state": _set_session_state,
    _VENDOR + "peek-message": _peek,
    _VENDOR + "receive-by-sequence-number": _receive_by_sequence_number,
    _VENDOR + "get-message-sessions": _get_message_sessions,
}
_SENDER_OPERATIONS: dict[str, Callable[[SendEntity, Mapping[str, Any], float], ManagementReply]] = {
    _VENDOR + "schedule-message": _schedule,
    _VENDOR + "cancel-scheduled-message": _cancel,
}


def handle_management(
    operation: str,
    body: Any,
    store: MessageStore | None,
    now: float,
    entity: SendEntity | None = None,
) -> ManagementReply:
    """Answer one ``$management`` request addressed to a queue/subscription (``store``) or a
    topic/queue a sender uses (``entity``); None where the path names no such thing."""
    request: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    arguments = {str(k): v for k, v in request.items()}
    sender_handler = _SENDER_OPERATIONS.get(operation)
    if sender_handler is not None and entity is not None:
        return sender_handler(entity, arguments, now)
    handler = _OPERATIONS.get(operation)
    if handler is None or store is None:
        return ManagementReply(
            501,
            f"The local broker does not implement {operation!r} here.",
            None,
            "amqp:not-implemented",
        )
    return handler(store, arguments, now)
