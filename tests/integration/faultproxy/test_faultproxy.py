"""devstack.faultproxy: a loopback TCP proxy that passes, drops or black-holes connections.

An echo server stands upstream; each test reads what a client sees through the proxy.
The last test sends real Service Bus traffic through it to the local broker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from devstack.faultproxy import FaultProxy, Mode
from devstack.servicebus import LocalServiceBus

pytestmark = pytest.mark.integration

_READ_TIMEOUT = 5.0


class EchoServer:
    """Echoes every byte back; closes its side when the client closes its own."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.accepted = 0
        self.received = bytearray()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            while data := connection.recv(65536):
                self.received.extend(data)
                connection.sendall(data)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.address, name="test-proxy") as started:
        yield started


def _connect(proxy: FaultProxy) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=_READ_TIMEOUT)
    client.settimeout(_READ_TIMEOUT)
    return client


def _read_exactly(client: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data.extend(chunk)
    return bytes(data)


def test_faultproxy_pass_mode_forwards_bytes_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one buffer's worth
    with _connect(proxy) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        echoed = _read_exactly(client, len(payload))
        sender.join(timeout=_READ_TIMEOUT)

    assert echoed == payload
    assert proxy.stats.bytes_up == len(payload)
    assert proxy.stats.bytes_down == len(payload)


def test_faultproxy_client_half_close_reaches_upstream_and_back(proxy: FaultProxy) -> None:
    with _connect(proxy) as client:
        client.sendall(b"last words")
        client.shutdown(socket.SHUT_WR)
        echoed = _read_exactly(client, 64)  # the echo server closes after our EOF

    assert echoed == b"last words"


def test_faultproxy_drop_mode_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as open_before:
        open_before.sendall(b"ping")
        assert _read_exactly(open_before, 4) == b"ping"

        proxy.set_mode(Mode.DROP)

        with pytest.raises(ConnectionResetError):
            open_before.recv(4)
    # The reset may reach the client while it connects or on its first read (load decides).
    with pytest.raises(ConnectionResetError), _connect(proxy) as opened_during:
        opened_during.recv(4)
    assert proxy.stats.reset == 2


def test_faultproxy_blackhole_stalls_then_pass_delivers_the_stalled_bytes(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with _connect(proxy) as open_before:
        proxy.set_mode(Mode.BLACKHOLE)
        with _connect(proxy) as opened_during:
            open_before.sendall(b"one")
            opened_during.sendall(b"two")
            for client in (open_before, opened_during):
                client.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    client.recv(3)
            assert echo.accepted == 1  # the new connection was not forwarded

            proxy.set_mode(Mode.PASS)

            for client, expected in ((open_before, b"one"), (opened_during, b"two")):
                client.settimeout(_READ_TIMEOUT)
                assert _read_exactly(client, 3) == expected
    assert echo.accepted == 2


def test_faultproxy_one_way_delivers_requests_and_holds_the_answers(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with _connect(proxy) as client:
        proxy.set_mode(Mode.ONE_WAY)
        client.sendall(b"request")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(7)
        assert bytes(echo.received) == b"request"  # it landed: the echo answered it

        proxy.set_mode(Mode.PASS)

        client.settimeout(_READ_TIMEOUT)
        assert _read_exactly(client, 7) == b"request"


def test_faultproxy_drop_after_blackhole_resets_the_stalled_connections(
    proxy: FaultProxy,
) -> None:
    proxy.set_mode(Mode.BLACKHOLE)
    with _connect(proxy) as stalled:
        stalled.sendall(b"lost")

        proxy.set_mode(Mode.DROP)

        with pytest.raises(ConnectionResetError):
            stalled.recv(4)


def test_faultproxy_upstream_down_resets_the_client() -> None:
    # Bound but not listening: connections are refused, and the port stays ours for the whole
    # test (a port closed and left free could be taken by another server meanwhile).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        address = unused.getsockname()[:2]
        with FaultProxy((str(address[0]), int(address[1]))) as proxy:
            # The reset may reach the client while it connects or on its first read.
            with pytest.raises(ConnectionResetError), _connect(proxy) as client:
                client.recv(5)
            assert proxy.stats.upstream_failures == 1


def test_faultproxy_close_resets_connections_and_stops_listening(echo: EchoServer) -> None:
    proxy = FaultProxy(echo.address).start()
    port = proxy.port
    client = _connect(proxy)

    proxy.close()

    with client, pytest.raises(ConnectionResetError):
        client.recv(1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=_READ_TIMEOUT).close()
    proxy.close()  # idempotent


def test_faultproxy_servicebus_sdk_sends_and_receives_through_it() -> None:
    with (
        LocalServiceBus() as bus,
        FaultProxy(("127.0.0.1", bus.port), name="broker-proxy") as proxy,
    ):
        via_proxy = bus.connection_string.replace(f":{bus.port};", f":{proxy.port};")
        with ServiceBusClient.from_connection_string(via_proxy, retry_total=0) as client:
            with client.get_queue_sender("payments") as sender:
                sender.send_messages(ServiceBusMessage(b"{}", session_id="s-1", message_id="m-1"))
            with client.get_queue_receiver("payments", session_id="s-1") as receiver:
                received = receiver.receive_messages(max_message_count=1, max_wait_time=5)
                for message in received:
                    receiver.complete_message(message)

        assert [m.message_id for m in received] == ["m-1"]
        assert proxy.stats.accepted >= 1
        assert bus.stats.messages["payments"] == 1
