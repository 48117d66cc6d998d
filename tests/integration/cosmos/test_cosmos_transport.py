"""The Cosmos DB transport reads the proxy environment once per host, and still obeys it:
HTTPS_PROXY sends the requests through the proxy (an HTTP CONNECT proxy on loopback here),
NO_PROXY keeps a host direct. Direct requests go through urllib3 (an HTTPS server on loopback
with its own certificate here): REQUESTS_CA_BUNDLE is the certificate store when the
certificate is verified, connections are reused, and every failure is the azure-core error the
Cosmos DB SDK's retry policies decide on (events/adapters/cosmos/transport.py)."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpRequest

from devstack.cosmos import LocalCosmos
from devstack.tls import write_self_signed
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


class _Handler(BaseHTTPRequestHandler):
    """/ok answers 200 with a JSON body, /slow answers after 2 s, /short promises 100 bytes
    and sends 10 before closing; every request line is recorded."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: TlsServer = self.server.owner  # type: ignore[attr-defined]
        server.paths.append(self.path)
        server.connections.add(self.client_address)
        if self.path.startswith("/slow"):
            time.sleep(2)
        if self.path.startswith("/short"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class TlsServer:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed certificate (``cert_file``)."""

    def __init__(self, directory: Path) -> None:
        self.cert_file, key_file = write_self_signed(directory, "transport-test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        # A client that gave up (the timeout test) leaves the /slow answer nowhere to go.
        self._server.handle_error = lambda *_: None  # type: ignore[method-assign]
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.owner = self  # type: ignore[attr-defined]
        self.paths: list[str] = []
        self.connections: set[tuple[str, int]] = set()
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsServer]:
    for name in (*PROXY_VARIABLES, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    server = TlsServer(tmp_path)
    yield server
    server.close()


def get(transport: CosmosTransport, url: str, **options: Any) -> Any:
    return transport.send(HttpRequest("GET", url), **options)


def test_transport_with_ca_bundle_set_verifies_the_server_with_that_bundle(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.cert_file))

    response = get(CosmosTransport(), f"{tls_server.url}/ok", connection_verify=True)

    assert response.status_code == 200
    assert json.loads(response.text()) == {"ok": True}


def test_transport_without_ca_bundle_refuses_a_certificate_no_public_authority_signed(
    tls_server: TlsServer,
) -> None:
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        get(CosmosTransport(), f"{tls_server.url}/ok", connection_verify=True)
    assert tls_server.paths == []


def test_transport_with_verification_off_accepts_the_self_signed_certificate(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.cert_file))

    response = get(CosmosTransport(), f"{tls_server.url}/ok", connection_verify=False)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


def test_transport_with_a_path_as_verify_uses_that_bundle(tls_server: TlsServer) -> None:
    transport = CosmosTransport()

    response = get(transport, f"{tls_server.url}/ok", connection_verify=str(tls_server.cert_file))

    assert response.status_code == 200


def test_transport_requests_to_one_host_share_one_connection(tls_server: TlsServer) -> None:
    transport = CosmosTransport()
    for _ in range(5):
        assert get(transport, f"{tls_server.url}/ok", connection_verify=False).status_code == 200

    assert len(tls_server.connections) == 1


def test_transport_path_with_spaces_and_unicode_is_sent_quoted(tls_server: TlsServer) -> None:
    get(CosmosTransport(), f"{tls_server.url}/ok/a b/é?q=1", connection_verify=False)

    assert tls_server.paths == ["/ok/a%20b/%C3%A9?q=1"]


def test_transport_server_slower_than_read_timeout_is_a_response_timeout(
    tls_server: TlsServer,
) -> None:
    with pytest.raises(ServiceResponseTimeoutError):
        get(CosmosTransport(), f"{tls_server.url}/slow", connection_verify=False, read_timeout=0.3)


def test_transport_body_cut_short_is_an_incomplete_read(tls_server: TlsServer) -> None:
    with pytest.raises(IncompleteReadError):
        get(CosmosTransport(), f"{tls_server.url}/short", connection_verify=False)


def test_transport_connection_refused_is_a_request_error_the_sdk_retries() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]

    with pytest.raises(ServiceRequestError) as raised:
        get(CosmosTransport(), f"https://127.0.0.1:{port}/ok", connection_timeout=2)
    assert not isinstance(raised.value, ServiceRequestTimeoutError)


def test_transport_option_it_does_not_know_is_refused(tls_server: TlsServer) -> None:
    with pytest.raises(TypeError, match="cookies"):
        get(CosmosTransport(), f"{tls_server.url}/ok", connection_verify=False, cookies={})
    assert tls_server.paths == []
