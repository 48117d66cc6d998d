"""The HTTP transport of every Cosmos DB client: requests go straight to urllib3's connection
pools, with the process environment read once per host.

azure-core's default transport sends each request through a ``requests.Session``: it merges
session settings, prepares and re-validates every header, walks the whole environment twice
(proxies, then ``NO_PROXY``), looks for a ``.netrc`` and builds a cookie jar from each response.
Below it is urllib3, which does the actual HTTP. On a Cosmos DB request of the relay (a
change-feed read, a checkpoint, the parked-aggregate check) that layer was about a third of the
client CPU (measured, docs/performance.md). This transport keeps azure-core's
``RequestsTransport`` (its configuration, its error types, its behaviour behind a proxy) and
sends a request without a proxy directly through urllib3:

- the connection pool per scheme, host, port and TLS settings, as requests keeps them;
- TLS verified against ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when set, else certifi's
  bundle, as requests does; ``connection_verify=False`` turns verification off; a client
  certificate from ``connection_cert``;
- urllib3's errors become azure-core's (``ServiceRequestError`` when the request did not leave,
  ``ServiceResponseError`` when the answer broke, their timeout variants), which is what the
  Cosmos DB SDK's retry policies decide on;
- no retries and no redirects of its own: the SDK retries, Cosmos DB does not redirect.

A request whose host goes through a proxy (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``,
``NO_PROXY`` applied, as requests reads them) is sent by azure-core's requests transport
unchanged. ``.netrc`` is never used: Cosmos DB requests carry their own authorization header.
The environment is read once per scheme and network location, for the life of the process.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator, MutableMapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import certifi
import urllib3
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpResponse, RequestsTransport
from azure.core.utils import CaseInsensitiveDict
from requests.utils import get_environ_proxies, requote_uri, select_proxy
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

__all__ = ["CosmosTransport"]

_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
#: Connections kept per pool: requests' default, enough for the relay's processor threads.
_POOL_CONNECTIONS = 10
_PLAIN_URL_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)


class _Response(HttpResponse):
    """An azure-core response over a urllib3 response whose body is already read."""

    def __init__(
        self, request: Any, internal: urllib3.BaseHTTPResponse, body: bytes, block_size: int
    ) -> None:
        super().__init__(request, internal, block_size=block_size)
        self.status_code = internal.status
        self.headers = CaseInsensitiveDict(internal.headers.items())
        self.reason = internal.reason
        self.content_type = self.headers.get("content-type")
        self._body = body

    def body(self) -> bytes:
        return self._body

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Iterator[bytes]:
        size = self.block_size
        return (self._body[i : i + size] for i in range(0, len(self._body), size))


class CosmosTransport(RequestsTransport):  # type: ignore[misc]
    """azure-core's ``RequestsTransport``, sending directly through urllib3 when no proxy
    applies; the environment read once per host."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["use_env_settings"] = False
        super().__init__(**kwargs)
        self._routes: dict[tuple[str, str], tuple[dict[str, str], bool]] = {}
        self._ca_bundle = next(
            (os.environ[name] for name in _CA_BUNDLE_VARIABLES if os.environ.get(name)), None
        )
        self._pools = urllib3.PoolManager(num_pools=_POOL_CONNECTIONS, maxsize=_POOL_CONNECTIONS)
        self._tls: dict[tuple[object, object], dict[str, Any]] = {}

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxies requests would use for ``url`` (NO_PROXY applied), read once per
        scheme and network location."""
        return self._route(url, urlsplit(url))[0]

    def _route(self, url: str, parts: SplitResult) -> tuple[dict[str, str], bool]:
        """The proxies for ``url`` (split as ``parts``), and whether none of them applies (a
        direct request)."""
        key = (parts.scheme, parts.netloc)
        route = self._routes.get(key)
        if route is None:
            proxies = dict(get_environ_proxies(url))
            route = self._routes[key] = (proxies, select_proxy(url, proxies) is None)
        return route

    def _verify(self, verify: object) -> object:
        """What ``connection_verify`` means here: True is the CA bundle of the environment
        when one is set (else certifi's), False is no verification, a path is that bundle."""
        if verify is True and self._ca_bundle is not None:
            return self._ca_bundle
        return verify

    def send(
        self, request: Any, *, proxies: MutableMapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        url = request.url
        if not _PLAIN_URL_CHARACTERS.issuperset(url):
            url = requote_uri(url)
        parts = urlsplit(url)
        if proxies is None:
            proxies, direct = self._route(url, parts)
        else:
            direct = select_proxy(url, dict(proxies)) is None
        verify = self._verify(kwargs.pop("connection_verify", self.connection_config.verify))
        if not direct or getattr(request, "files", None):
            return super().send(request, proxies=proxies, connection_verify=verify, **kwargs)
        return self._send_direct(request, parts, verify, **kwargs)

    def close(self) -> None:
        super().close()
        self._pools.clear()

    def _send_direct(
        self,
        request: Any,
        parts: SplitResult,
        verify: object,
        *,
        stream: bool = False,
        connection_timeout: Any = None,
        read_timeout: Any = None,
        connection_cert: Any = None,
        **unexpected: Any,
    ) -> _Response:
        if unexpected:
            raise TypeError(f"unexpected request options: {', '.join(sorted(unexpected))}")
        del stream  # Cosmos DB answers are JSON pages: always read whole
        pool = self._pools.connection_from_host(
            parts.hostname,
            port=parts.port,
            scheme=parts.scheme,
            pool_kwargs=self._tls_settings(
                verify,
                connection_cert if connection_cert is not None else self.connection_config.cert,
            ),
        )
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        try:
            answer = pool.urlopen(
                request.method,
                target,
                body=request.data,
                headers=request.headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=self._timeout(connection_timeout, read_timeout),
                preload_content=False,
                decode_content=True,
            )
            try:
                body = answer.read()
            finally:
                answer.release_conn()
        except ProtocolError as error:
            # urllib3 wraps a body cut short as ProtocolError("Connection broken: ...", cause).
            if any(isinstance(cause, http.client.IncompleteRead) for cause in error.args):
                raise IncompleteReadError(error, error=error) from error
            raise ServiceResponseError(error, error=error) from error
        except NewConnectionError as error:
            raise ServiceRequestError(error, error=error) from error
        except ConnectTimeoutError as error:
            raise ServiceRequestTimeoutError(error, error=error) from error
        except ReadTimeoutError as error:
            raise ServiceResponseTimeoutError(error, error=error) from error
        except HTTPError as error:
            raise ServiceRequestError(error, error=error) from error
        return _Response(request, answer, body, self.connection_config.data_block_size)

    def _timeout(self, connection_timeout: Any, read_timeout: Any) -> urllib3.Timeout:
        connect = (
            self.connection_config.timeout if connection_timeout is None else connection_timeout
        )
        read = self.connection_config.read_timeout if read_timeout is None else read_timeout
        if isinstance(connect, tuple):  # azure-core's deprecated (connect, read) form
            connect, read = connect
        return urllib3.Timeout(connect=connect, read=read)

    def _tls_settings(self, verify: object, cert: object) -> dict[str, Any]:
        key = (verify, cert)
        settings = self._tls.get(key)
        if settings is None:
            settings = self._tls[key] = _tls_settings(verify, cert)
        return settings


def _tls_settings(verify: object, cert: object) -> dict[str, Any]:
    """urllib3's pool settings for requests' ``verify`` and ``cert`` values."""
    settings: dict[str, Any]
    if verify is False:
        settings = {"cert_reqs": "CERT_NONE"}
    else:
        bundle = certifi.where() if verify is True or verify is None else str(verify)
        where = "ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"
        settings = {"cert_reqs": "CERT_REQUIRED", where: bundle}
    if isinstance(cert, tuple):
        certificate, key = cert
        if certificate:
            settings["cert_file"] = certificate
        if key:
            settings["key_file"] = key
    elif cert:
        settings["cert_file"] = str(cert)
    return settings
