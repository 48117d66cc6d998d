"""The HTTP transport of every Cosmos DB client: azure-core's own requests transport, with the
process environment read once per host instead of on every request.

With azure-core's default (``use_env_settings=True``), requests walks the whole environment
twice per request (proxies, then NO_PROXY) and looks for a ``.netrc``: about 12 % of the client
CPU of a Cosmos DB request here (measured, docs/performance.md), paid by every change-feed read,
checkpoint and parked-aggregate check. This transport resolves the same settings once per
scheme, host and port, with requests' own functions, and keeps them for the life of the
process:

- ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY``, as requests reads them;
- ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when the certificate is verified;
- never ``.netrc``: Cosmos DB requests carry their own authorization header.

A change to those variables takes effect at the next start of the process.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline.transport import RequestsTransport
from requests.utils import get_environ_proxies

__all__ = ["CosmosTransport"]

_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class CosmosTransport(RequestsTransport):  # type: ignore[misc]
    """azure-core's ``RequestsTransport`` with the environment read once per host."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["use_env_settings"] = False
        super().__init__(**kwargs)
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        self._ca_bundle = next(
            (os.environ[name] for name in _CA_BUNDLE_VARIABLES if os.environ.get(name)), None
        )

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxies requests would use for ``url`` (NO_PROXY applied), read once per
        scheme and network location."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        proxies = self._proxies.get(key)
        if proxies is None:
            proxies = self._proxies[key] = dict(get_environ_proxies(url))
        return proxies

    def send(
        self, request: Any, *, proxies: MutableMapping[str, str] | None = None, **kwargs: Any
    ) -> Any:
        if proxies is None:
            proxies = self.proxies_for(request.url)
        if self._ca_bundle is not None:
            verify = kwargs.get("connection_verify", self.connection_config.verify)
            if verify is True:
                kwargs["connection_verify"] = self._ca_bundle
        return super().send(request, proxies=proxies, **kwargs)
