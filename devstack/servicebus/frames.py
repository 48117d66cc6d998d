"""A filter on the bytes a client sends, before proton reads them: delivery ids renumbered.

pyamqp (azure-servicebus 7.15, ``_pyamqp/session.py`` ``_outgoing_transfer``) numbers a transfer
with the session's ``next_outgoing_id`` and increments it after writing the frame, without a
lock. Concurrent ``$management`` requests on one receiver (``AutoLockRenewer`` renews several
messages at once from its thread pool) can so send two transfers with the same delivery id.
Service Bus accepts them; proton closes the connection with ``amqp:session:invalid-field``
"sequencing error". This filter gives each new delivery on a channel the id proton expects. It
reads only frame headers and performatives and streams payloads through unchanged.
"""

from __future__ import annotations

import select
import struct
from typing import Any

from proton import Data, Described, uint, ulong

__all__ = ["DeliveryIdFilter", "SocketFilter"]

_AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
_BEGIN, _TRANSFER = 0x11, 0x14
_HEADROOM = 64  # a rewritten performative grows by a few bytes at most
_WAIT_SECONDS = 5.0  # for the rest of a split frame header (it follows in the same write)


def _copied(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


class DeliveryIdFilter:
    """Feed it the bytes read from a client; it returns the bytes to give proton."""

    def __init__(self) -> None:
        self._buffer = b""
        self._in_headers = True
        self._passthrough = 0  # bytes of the current frame still to copy unchanged
        self._next_id: dict[int, int] = {}
        self._open_delivery: dict[int, int] = {}  # channel -> id of a delivery with more frames

    @property
    def held(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out: list[bytes] = []
        while self._buffer:
            if self._passthrough:
                part = self._buffer[: self._passthrough]
                self._buffer = self._buffer[len(part) :]
                self._passthrough -= len(part)
                out.append(part)
                continue
            if self._in_headers and self._buffer[:4] == b"AMQP"[: len(self._buffer[:4])]:
                if len(self._buffer) < 8:
                    break
                header, self._buffer = self._buffer[:8], self._buffer[8:]
                self._in_headers = header != _AMQP_HEADER
                out.append(header)
                continue
            produced = self._frame_start()
            if produced is None:
                break
            out.append(produced)
        return b"".join(out)

    def _frame_start(self) -> bytes | None:
        """The (possibly rewritten) start of the next frame, or None until enough has arrived."""
        buffer = self._buffer
        if len(buffer) < 8:
            return None
        size, doff, kind = struct.unpack(">I", buffer[:4])[0], buffer[4], buffer[5]
        channel = struct.unpack(">H", buffer[6:8])[0]
        start = doff * 4
        body = buffer[start:size]
        if size < 8 or start < 8 or kind != 0 or self._in_headers:
            return self._copy(len(buffer) if size < 8 else size)
        if len(body) < 3:
            return None if len(buffer) < size else self._copy(size)
        code = body[2] if body[:2] == b"\x00\x53" else -1
        if code not in (_BEGIN, _TRANSFER):
            return self._copy(size)
        data = Data()
        try:
            consumed = data.decode(body)
            data.rewind()
            data.next()
            value = data.get_object()
        except Exception:  # noqa: BLE001 - proton's DataException: a truncated performative
            return None if len(buffer) < size else self._copy(size)
        if not isinstance(value, Described) or not isinstance(value.value, list):
            return self._copy(size)
        fields: list[Any] = value.value
        if code == _BEGIN:
            if len(fields) > 1 and isinstance(fields[1], int):
                self._next_id[channel] = int(fields[1])
            self._open_delivery.pop(channel, None)
            return self._copy(size)
        sent = fields[1] if len(fields) > 1 else None
        expected = self._open_delivery.get(channel)
        if expected is None:  # the first frame of a new delivery
            expected = self._next_id.get(channel, sent if isinstance(sent, int) else 0)
            self._next_id[channel] = (expected + 1) & 0xFFFFFFFF
        if len(fields) > 5 and fields[5]:
            self._open_delivery[channel] = expected
        else:
            self._open_delivery.pop(channel, None)
        if sent is None or sent == expected:
            return self._copy(size)
        fields[1] = uint(expected)
        rewritten = Data()
        rewritten.put_object(Described(ulong(code), [_copied(f) for f in fields]))
        performative = bytes(rewritten.encode())
        rest = size - start - consumed
        header = buffer[4:start]
        new_size = 4 + len(header) + len(performative) + rest
        self._buffer = buffer[start + consumed :]
        self._passthrough = rest
        return struct.pack(">I", new_size) + header + performative

    def _copy(self, size: int) -> bytes:
        self._passthrough = size
        part = self._buffer[:size]
        self._buffer = self._buffer[len(part) :]
        self._passthrough -= len(part)
        return part


class SocketFilter:
    """An accepted socket whose received bytes pass through a ``DeliveryIdFilter``."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._filter = DeliveryIdFilter()

    def recv(self, size: int) -> bytes:
        room = max(1, size - self._filter.held - _HEADROOM)
        chunk: bytes = self._sock.recv(room)
        if not chunk:
            return chunk
        fixed = self._filter.feed(chunk)
        while not fixed:  # b"" would mean end of stream to proton: wait for the rest
            readable, _, _ = select.select([self._sock], [], [], _WAIT_SECONDS)
            if not readable:
                return b""
            more: bytes = self._sock.recv(room)
            if not more:
                return more
            fixed = self._filter.feed(more)
        return fixed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
