"""Cosmos DB adapters of the change-feed processor: the feed of a container, and leases.

The feed uses the SDK's pull model. Its continuation is the SDK's own token (base64 JSON with
the container rid, the feed range and the server etag), which survives splits. The SDK puts
that token into the response headers of the page request it belongs to (``etag``); reading it
through a per-request ``response_hook`` keeps concurrent readers on one client apart, which
``client_connection.last_response_headers`` (shared by the whole client) would not.
https://learn.microsoft.com/azure/cosmos-db/nosql/change-feed-pull-model
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosHttpResponseError,
    CosmosResourceNotFoundError,
)

from events.adapters.cosmos.errors import (
    LEASE_LOST_STATUS,
    location_of,
    read_item_or_none,
    translate_cosmos_errors,
)
from events.changefeed.errors import LeaseLostError
from events.changefeed.feed import FeedRange, Page, Position
from events.changefeed.leases import Lease
from events.errors import StoreUnavailableError

__all__ = ["CosmosChangeFeed", "CosmosLeaseStore", "HostLease", "host_leases"]


class _HeaderCapture:
    """A response hook keeping the headers of the last response of one request."""

    def __init__(self) -> None:
        self.headers: Mapping[str, Any] | None = None

    def __call__(self, headers: Mapping[str, Any], _body: object) -> None:
        self.headers = headers


class CosmosChangeFeed:
    """The latest-version change feed of one container.

    Reading page after page of one feed range continues the SDK's own page iterator (as a
    plain ``by_page()`` loop would) instead of building a new one from the continuation: the
    iterator is kept with the continuation it stopped at and used only for a read from exactly
    that position, by one thread at a time. Any other position starts a new iterator.
    """

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)
        self._lock = threading.Lock()
        #: Per feed range: (continuation the iterator stopped at, its pages, its header capture).
        self._resumable: dict[FeedRange, tuple[str, Iterator[Any], _HeaderCapture]] = {}

    @property
    def container(self) -> ContainerProxy:
        return self._container

    def feed_ranges(self) -> list[FeedRange]:
        with translate_cosmos_errors("read feed ranges", where=self._where):
            raw = list(self._container.read_feed_ranges())
        return [FeedRange.from_json(item["Range"]) for item in raw]

    def read_page(self, feed_range: FeedRange, position: Position, max_items: int) -> Page:
        with self._lock:
            kept = self._resumable.pop(feed_range, None)
        if kept is not None and kept[0] == position:
            _, pages, capture = kept
        else:
            pages, capture = self._pages(feed_range, position, max_items)
        with translate_cosmos_errors("read change feed", where=self._where):
            try:
                items = [dict(item) for item in next(pages)]
            except StopIteration:
                items = []
        token = capture.headers.get("etag") if capture.headers is not None else None
        if not isinstance(token, str) or not token:
            raise StoreUnavailableError(
                f"{self._where}: the change feed answered without a continuation"
            )
        if items:  # after an empty page the SDK's iterator is finished: start anew next time
            with self._lock:
                self._resumable[feed_range] = (token, pages, capture)
        return Page(items=items, continuation=token)

    def continuation_at(self, feed_range: FeedRange, etag: str) -> str:
        """A continuation of this feed that resumes ``feed_range`` after ``etag`` (the server's
        change-feed etag, as the .NET change-feed processor stores it in its leases).

        Built from the feed's own continuation for "now" with the etag put in place of its
        token: the SDK's token format is an SDK internal (base64 JSON), so a change there
        shows in the integration test that measures a Functions-host lease.
        """
        template = self.read_page(feed_range, "now", 1).continuation
        try:
            state = json.loads(base64.b64decode(template))
            for part in state["continuation"]["continuation"]:
                part["token"] = etag
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailableError(
                f"{self._where}: the SDK's change-feed continuation has an unknown format "
                f"({exc}); a Functions-host lease cannot be read with this SDK version"
            ) from exc
        return base64.b64encode(json.dumps(state).encode()).decode()

    def _pages(
        self, feed_range: FeedRange, position: Position, max_items: int
    ) -> tuple[Iterator[Any], _HeaderCapture]:
        capture = _HeaderCapture()
        kwargs: dict[str, Any] = {"max_item_count": max_items, "response_hook": capture}
        if isinstance(position, datetime):
            kwargs.update(feed_range=_sdk_range(feed_range), start_time=position)
        elif position in ("beginning", "now"):
            start = "Beginning" if position == "beginning" else "Now"
            kwargs.update(feed_range=_sdk_range(feed_range), start_time=start)
        else:
            kwargs["continuation"] = position
        with translate_cosmos_errors("read change feed", where=self._where):
            return self._container.query_items_change_feed(**kwargs).by_page(), capture


def _sdk_range(feed_range: FeedRange) -> dict[str, Any]:
    return {
        "Range": {
            "min": feed_range.min,
            "max": feed_range.max,
            "isMinInclusive": True,
            "isMaxInclusive": False,
        }
    }


class CosmosLeaseStore:
    """Leases as documents of a container partitioned by ``/id``."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)

    def list(self, prefix: str) -> list[Lease]:
        with translate_cosmos_errors("list leases", where=self._where):
            documents = list(
                self._container.query_items(
                    "SELECT * FROM c WHERE STARTSWITH(c.id, @prefix)",
                    parameters=[{"name": "@prefix", "value": prefix}],
                    enable_cross_partition_query=True,
                )
            )
        # The Functions host keeps its own lease documents (another format, no leaseFormat)
        # in the same container under the same prefix: they are not this processor's.
        return sorted(
            (Lease.from_document(d) for d in documents if "leaseFormat" in d),
            key=lambda lease: lease.id,
        )

    def get(self, lease_id: str) -> Lease | None:
        document = read_item_or_none(
            self._container, lease_id, lease_id, "read lease", where=self._where
        )
        return None if document is None else Lease.from_document(document)

    def create(self, lease: Lease) -> Lease:
        try:
            with translate_cosmos_errors("create lease", where=self._where):
                document = self._container.create_item(lease.to_document())
        except CosmosHttpResponseError as exc:
            if exc.status_code in LEASE_LOST_STATUS:
                raise LeaseLostError(f"lease {lease.id} already exists") from exc
            raise
        return Lease.from_document(document)

    def replace(self, lease: Lease) -> Lease:
        if lease.etag is None:
            raise LeaseLostError(f"lease {lease.id} has no etag: read it first")
        try:
            with translate_cosmos_errors("write lease", where=self._where):
                document = self._container.replace_item(
                    lease.id,
                    lease.to_document(),
                    etag=lease.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except CosmosHttpResponseError as exc:
            if exc.status_code in LEASE_LOST_STATUS:
                raise LeaseLostError(f"lease {lease.id} was changed by someone else") from exc
            raise
        return Lease.from_document(document)

    def delete(self, lease: Lease) -> None:
        try:
            with translate_cosmos_errors("delete lease", where=self._where):
                self._container.delete_item(lease.id, partition_key=lease.id)
        except CosmosResourceNotFoundError:
            return


@dataclass(frozen=True)
class HostLease:
    """A lease the Functions host (the Cosmos DB trigger's change-feed processor) wrote.

    ``feed_range`` is None for a lease in the old partition-key-range format (``LeaseToken``
    only, no ``FeedRange``), ``position`` is None when that or the lease has no checkpoint
    yet: such a lease is listed, not measured.
    """

    id: str
    owner: str | None
    feed_range: FeedRange | None
    position: str | None


def _host_range(document: Mapping[str, Any]) -> FeedRange | None:
    raw = document.get("FeedRange")
    if not isinstance(raw, Mapping):
        return None
    bounds = raw.get("Range")
    if not isinstance(bounds, Mapping) or "min" not in bounds or "max" not in bounds:
        return None
    return FeedRange(min=str(bounds["min"]), max=str(bounds["max"]))


def host_leases(container: ContainerProxy, prefix: str, feed: CosmosChangeFeed) -> list[HostLease]:
    """The Functions host's leases under ``prefix`` (documents with a ``ContinuationToken``;
    its ``.info`` and ``.lock`` documents are skipped), each with a position ``feed`` reads.

    The format (Microsoft.Azure.Cosmos ``DocumentServiceLeaseCoreEpk``, written by the Cosmos
    DB extension 4.x): ``{"id", "version": 1, "LeaseToken", "FeedRange": {"Range": {"min",
    "max"}}, "Owner", "ContinuationToken": "<server etag>", "timestamp", "properties"}``.
    """
    where = location_of(container)
    with translate_cosmos_errors("list leases", where=where):
        documents = list(
            container.query_items(
                "SELECT * FROM c WHERE STARTSWITH(c.id, @prefix)",
                parameters=[{"name": "@prefix", "value": prefix}],
                enable_cross_partition_query=True,
            )
        )
    found = []
    for document in sorted(documents, key=lambda d: str(d["id"])):
        if "leaseFormat" in document or "ContinuationToken" not in document:
            continue
        feed_range = _host_range(document)
        token = document.get("ContinuationToken")
        position = (
            feed.continuation_at(feed_range, token)
            if feed_range is not None and isinstance(token, str) and token
            else None
        )
        owner = document.get("Owner")
        found.append(
            HostLease(
                id=str(document["id"]),
                owner=str(owner) if owner else None,
                feed_range=feed_range,
                position=position,
            )
        )
    return found
