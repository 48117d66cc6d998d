"""A loopback TCP proxy that can pass traffic, drop every connection, or black-hole it.

Put it between a client and a local server (the relay and the Service Bus broker, the relay
and the Cosmos DB server) to inject network faults the servers cannot inject themselves.
It forwards bytes unchanged, so TLS passes through it.

    with FaultProxy(("127.0.0.1", broker_port)) as proxy:   # listens on 127.0.0.1:proxy.port
        proxy.set_mode(Mode.BLACKHOLE)  # accept, but forward and answer nothing
        proxy.set_mode(Mode.PASS)       # the partition heals: stalled bytes flow again
        proxy.set_mode(Mode.DROP)       # reset every connection, and each new one at once
        proxy.set_mode(Mode.ONE_WAY)    # requests reach the server, its answers are held

Modes:

- ``PASS``: every accepted connection gets its own upstream connection; bytes flow both ways,
  a half close (EOF) is passed on.
- ``DROP``: every open connection is reset (RST on both sides); new connections are accepted
  and reset at once, as a crashed or firewalled peer would do.
- ``BLACKHOLE``: nothing is read, forwarded or answered; new connections are accepted and
  stall. Like a network partition, nothing is closed either: back in ``PASS`` the stalled
  bytes are delivered (what TCP retransmission does when a partition heals); ``DROP`` resets
  them instead.
- ``ONE_WAY``: bytes from clients reach the upstream; nothing comes back (held, as in a
  black hole, until ``PASS``). A request lands but its answer is lost: the client cannot
  know whether it took effect (a send that the broker enqueued but never acknowledged).

One thread owns every socket (a selector loop); ``set_mode`` and ``close`` are thread-safe and
take effect before they return. Errors: DevStackError when the proxy cannot listen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

from devstack.errors import DevStackError

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

_HOST = "127.0.0.1"
_CHUNK = 65536
#: Per direction: stop reading from a side while this much waits for the other side.
_MAX_BUFFER = 1 << 20
_CONNECT_TIMEOUT = 2.0
_COMMAND_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0


class Mode(StrEnum):
    PASS = "pass"
    DROP = "drop"
    BLACKHOLE = "blackhole"
    ONE_WAY = "one-way"


@dataclass(frozen=True)
class ProxyStats:
    """Counters since start: connections accepted, reset by DROP, and bytes forwarded."""

    accepted: int = 0
    reset: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket | None = None
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    upstream_eof: bool = False
    up_shut: bool = False
    client_shut: bool = False


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port), with fault modes."""

    def __init__(self, upstream: tuple[str, int], *, port: int = 0, name: str = "proxy") -> None:
        self._upstream = upstream
        self._requested_port = port
        self._name = name
        self._mode = Mode.PASS
        self._stats = ProxyStats()
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._connections: list[_Connection] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ public
    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError(f"{self._name} is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def stats(self) -> ProxyStats:
        with self._stats_lock:
            return self._stats

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((_HOST, self._requested_port))
        except OSError as exc:
            listener.close()
            raise DevStackError(
                f"{self._name} cannot listen on {_HOST}:{self._requested_port}: {exc}"
            ) from exc
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; returns once the proxy's thread has applied it."""
        self._call(lambda: self._apply_mode(Mode(mode)))

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self._call(self._request_stop)
            thread.join(_STOP_TIMEOUT)
        self._thread = None
        if thread.is_alive():
            raise DevStackError(f"{self._name} thread did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _call(self, command: Callable[[], None]) -> None:
        if self._thread is None or self._wake_w is None:
            raise RuntimeError(f"{self._name} is not started")
        done = threading.Event()
        self._commands.put((command, done))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if not done.wait(_COMMAND_TIMEOUT):
            raise TimeoutError(f"{self._name} did not apply a command in time")

    def _apply_mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode is Mode.DROP:
            for connection in list(self._connections):
                self._reset(connection)
        elif mode in (Mode.PASS, Mode.ONE_WAY):
            for connection in list(self._connections):
                if connection.upstream is None:
                    self._open_upstream(connection)
        self._refresh_all()

    def _request_stop(self) -> None:
        self._stopping = True

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping:
                for key, mask in selector.select(timeout=0.5):
                    if key.data == "wake":
                        self._drain_commands()
                    elif key.data == "listener":
                        self._accept()
                    else:
                        connection, side = key.data
                        if connection in self._connections:
                            self._service(connection, side, mask)
                self._drain_commands()
        finally:
            for connection in list(self._connections):
                self._reset(connection, count=False)
            for sock in (self._listener, self._wake_r, self._wake_w):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            selector.close()
            self._drain_commands()

    def _drain_commands(self) -> None:
        if self._wake_r is not None:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._count(accepted=1)
            connection = _Connection(client)
            self._connections.append(connection)
            if self._mode is Mode.DROP:
                self._reset(connection)
            elif self._mode is not Mode.BLACKHOLE:
                self._open_upstream(connection)
            # BLACKHOLE: accepted and left alone; PASS opens its upstream later.

    def _open_upstream(self, connection: _Connection) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=_CONNECT_TIMEOUT)
        except OSError:
            self._count(upstream_failures=1)
            self._reset(connection, count=False)
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.upstream = upstream
        self._refresh(connection)

    # ------------------------------------------------------------------ one connection
    def _service(self, connection: _Connection, side: str, mask: int) -> None:
        upstream = connection.upstream
        if upstream is None or self._mode in (Mode.BLACKHOLE, Mode.DROP):
            return
        try:
            if side == "client":
                self._pump(connection, mask, connection.client, upstream, up=True)
            else:
                self._pump(connection, mask, upstream, connection.client, up=False)
        except OSError:
            self._reset(connection, count=False)
            return
        if (
            connection.client_eof
            and connection.upstream_eof
            and not connection.to_upstream
            and not connection.to_client
        ):
            self._forget(connection)
        else:
            self._refresh(connection)

    def _pump(
        self,
        connection: _Connection,
        mask: int,
        source: socket.socket,
        sink: socket.socket,
        *,
        up: bool,
    ) -> None:
        """Read from ``source`` into the buffer for ``sink``; write ``source``'s own buffer."""
        outgoing = connection.to_upstream if up else connection.to_client
        incoming = connection.to_client if up else connection.to_upstream
        downstream = self._mode is Mode.PASS  # ONE_WAY: nothing flows back to the client
        if mask & selectors.EVENT_READ and (up or downstream):
            data = source.recv(_CHUNK)
            if data:
                outgoing.extend(data)
                self._count(**{"bytes_up" if up else "bytes_down": len(data)})
            elif up:
                connection.client_eof = True
            else:
                connection.upstream_eof = True
        if mask & selectors.EVENT_WRITE and incoming and (downstream or not up):
            sent = source.send(incoming)
            del incoming[:sent]
        # Try the other side at once: most of the time it can take the bytes.
        if outgoing and (up or downstream):
            with contextlib.suppress(BlockingIOError):
                sent = sink.send(outgoing)
                del outgoing[:sent]
        self._pass_eof(connection)

    def _pass_eof(self, connection: _Connection) -> None:
        upstream = connection.upstream
        if upstream is None:
            return
        if connection.client_eof and not connection.to_upstream and not connection.up_shut:
            connection.up_shut = True
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
        if connection.upstream_eof and not connection.to_client and not connection.client_shut:
            connection.client_shut = True
            with contextlib.suppress(OSError):
                connection.client.shutdown(socket.SHUT_WR)

    def _interest(self, connection: _Connection, client_side: bool) -> int:
        if self._mode in (Mode.BLACKHOLE, Mode.DROP) or connection.upstream is None:
            return 0
        downstream = self._mode is Mode.PASS
        eof = connection.client_eof if client_side else connection.upstream_eof
        outgoing = connection.to_upstream if client_side else connection.to_client
        incoming = connection.to_client if client_side else connection.to_upstream
        events = 0
        # The client side reads requests and writes answers; the upstream side the reverse.
        if not eof and len(outgoing) < _MAX_BUFFER and (client_side or downstream):
            events |= selectors.EVENT_READ
        if incoming and (downstream or not client_side):
            events |= selectors.EVENT_WRITE
        return events

    def _refresh(self, connection: _Connection) -> None:
        assert self._selector is not None
        for sock, side in ((connection.client, "client"), (connection.upstream, "upstream")):
            if sock is None:
                continue
            events = self._interest(connection, side == "client")
            try:
                registered = self._selector.get_key(sock)
            except KeyError:
                registered = None
            if events and registered is None:
                self._selector.register(sock, events, (connection, side))
            elif events and registered is not None and registered.events != events:
                self._selector.modify(sock, events, (connection, side))
            elif not events and registered is not None:
                self._selector.unregister(sock)

    def _refresh_all(self) -> None:
        for connection in list(self._connections):
            self._refresh(connection)

    def _reset(self, connection: _Connection, *, count: bool = True) -> None:
        """Close both sides with RST (linger 0), not FIN: the peer sees a reset connection."""
        for sock in (connection.client, connection.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if count:
            self._count(reset=1)
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        assert self._selector is not None
        for sock in (connection.client, connection.upstream):
            if sock is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(ValueError):
            self._connections.remove(connection)

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            values = {name: getattr(self._stats, name) + d for name, d in deltas.items()}
            self._stats = dataclasses.replace(self._stats, **values)
