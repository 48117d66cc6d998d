"""The Cosmos DB transport reads the proxy environment once per host, and still obeys it:
HTTPS_PROXY sends the requests through the proxy (an HTTP CONNECT proxy on loopback here),
NO_PROXY keeps a host direct, and REQUESTS_CA_BUNDLE is the certificate store when the
certificate is verified (events/adapters/cosmos/transport.py)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.pipeline.transport import RequestsTransport

from devstack.cosmos import LocalCosmos
from events.adapters.cosmos.client import cosmos_client
from events.adapters.cosmos.transport import CosmosTransport
from events.connections import CosmosConnection

pytestmark = pytest.mark.integration

PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that tunnels to wherever it is asked and records
    each CONNECT target."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.targets: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target)
            host, port = target.rsplit(":", 1)
            upstream = stack.enter_context(socket.create_connection((host, int(port)), 5))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            ends = [client, upstream]
            while not self._stopping.is_set():
                ready, _, _ = select.select(ends, [], [], 0.2)
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is client else client).sendall(data)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with ConnectProxy() as running:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{running.port}")
        yield running


def client_for(server: LocalCosmos) -> Any:
    # A setting name of its own: the process-wide client cache never hands back another's.
    connection = CosmosConnection(
        f"TEST_{uuid.uuid4().hex[:8]}", connection_string=server.connection_string
    )
    return cosmos_client(connection, verify_tls=False, timeout=10.0)


def test_cosmos_client_with_https_proxy_set_sends_its_requests_through_the_proxy(
    local_cosmos: LocalCosmos, proxy: ConnectProxy
) -> None:
    client = client_for(local_cosmos)
    name = f"proxied-{uuid.uuid4().hex[:8]}"
    client.create_database(id=name)
    client.delete_database(name)

    assert proxy.targets
    assert set(proxy.targets) == {urlsplit(local_cosmos.endpoint).netloc}


def test_cosmos_client_with_host_in_no_proxy_connects_directly(
    local_cosmos: LocalCosmos, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = client_for(local_cosmos)
    name = f"direct-{uuid.uuid4().hex[:8]}"
    client.create_database(id=name)
    client.delete_database(name)

    assert proxy.targets == []


def test_transport_environment_changed_after_first_request_keeps_first_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    transport = CosmosTransport()
    url = "https://account.documents.azure.com:443/dbs"
    first = transport.proxies_for(url)
    monkeypatch.setenv("NO_PROXY", "documents.azure.com")

    assert first["https"] == "http://proxy.example:3128"
    assert transport.proxies_for(url) == first
    assert CosmosTransport().proxies_for(url) == {}


def test_transport_with_ca_bundle_set_verifies_with_that_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/company-roots.pem")
    seen: list[object] = []

    def sent(self: RequestsTransport, request: Any, **kwargs: Any) -> None:
        seen.append(kwargs.get("connection_verify", "unset"))

    monkeypatch.setattr(RequestsTransport, "send", sent)
    transport = CosmosTransport()
    request = type("Request", (), {"url": "https://account.documents.azure.com/"})()
    transport.send(request, connection_verify=True)
    transport.send(request, connection_verify=False)
    transport.send(request)

    assert seen == ["/etc/ssl/company-roots.pem", False, "/etc/ssl/company-roots.pem"]
