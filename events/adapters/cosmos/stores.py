"""Cosmos DB adapters for the relay's own state: the quarantine and the idempotent consumer's
inbox (the transactional inbox lives in the consumer's own container: ``cosmos.inbox``).

The quarantine container (partition key ``/partitionKey``, the aggregate's partition key value)
holds two kinds of documents in each aggregate's logical partition: its records, and one
marker per parked aggregate (``kind = "parked-aggregate"``, id per feed). The relay's check is
one query over the markers for the batch's partition key values: at most one marker per key
matches, so the answer fits one page (``max_item_count`` = the number of keys); on a
container of one physical partition (a quarantine container is small) that is one request.
Release deletes the marker with ``If-Match`` on the ``_etag`` read before the re-drive: every
park is an upsert, which gives the marker a new ``_etag``, so a park during the re-drive makes
the release fail (412) instead of losing the new record behind a released aggregate.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from events.adapters.cosmos.errors import location_of, read_item_or_none, translate_cosmos_errors
from events.core.consumer import InboxEntry, InboxState
from events.core.ordering import POSITION_KIND, Position, position_id
from events.core.quarantine import ParkedAggregate, QuarantineRecord, parked_aggregate_id

__all__ = ["CosmosInbox", "CosmosQuarantine"]


#: ``kind`` of a parked-aggregate marker; records have no ``kind`` (they predate markers).
PARKED_KIND: Final = "parked-aggregate"


def _marker(document: Mapping[str, Any]) -> ParkedAggregate:
    return ParkedAggregate(
        feed=str(document["feed"]),
        partition_key=str(document["partitionKey"]),
        parked_at=datetime.fromisoformat(str(document["parkedAt"])),
        version=str(document["_etag"]),
        from_lsn=_lsn(document.get("fromLsn")),
    )


def _lsn(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CosmosQuarantine:
    """Quarantine records and parked-aggregate markers as documents; upserts by deterministic
    id, so retries are harmless."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)

    def put(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine write", where=self._where):
            self._container.upsert_item(record.to_document())

    def park(self, feed: str, partition_key: str, at: datetime, from_lsn: int | None) -> None:
        marker = {
            "id": parked_aggregate_id(feed, partition_key),
            "partitionKey": partition_key,
            "kind": PARKED_KIND,
            "feed": feed,
            "parkedAt": at.isoformat(),
            "fromLsn": from_lsn,
        }
        with translate_cosmos_errors("quarantine park", where=self._where):
            self._container.upsert_item(marker)

    def parked(self, feed: str, partition_keys: Collection[str]) -> dict[str, int | None]:
        if not partition_keys:
            return {}
        keys = sorted(partition_keys)
        with translate_cosmos_errors("quarantine parked check", where=self._where):
            items = self._container.query_items(
                "SELECT c.partitionKey, c.fromLsn FROM c WHERE c.kind = @kind AND c.feed = @feed "
                "AND ARRAY_CONTAINS(@keys, c.partitionKey)",
                parameters=[
                    {"name": "@kind", "value": PARKED_KIND},
                    {"name": "@feed", "value": feed},
                    {"name": "@keys", "value": keys},
                ],
                enable_cross_partition_query=True,
                max_item_count=len(keys),
            )
            return {str(item["partitionKey"]): _lsn(item.get("fromLsn")) for item in items}

    def delete(self, record: QuarantineRecord) -> None:
        with translate_cosmos_errors("quarantine delete", where=self._where):
            try:
                self._container.delete_item(record.id, partition_key=record.partition_key)
            except CosmosResourceNotFoundError:
                return  # already gone: deleting twice is harmless

    def records_of(self, feed: str, partition_key: str) -> list[QuarantineRecord]:
        with translate_cosmos_errors("quarantine read", where=self._where):
            items = self._container.query_items(
                "SELECT * FROM c WHERE NOT IS_DEFINED(c.kind) AND c.feed = @feed",
                parameters=[{"name": "@feed", "value": feed}],
                partition_key=partition_key,
            )
            return [QuarantineRecord.from_document(item) for item in items]

    def parked_aggregate(self, feed: str, partition_key: str) -> ParkedAggregate | None:
        item = read_item_or_none(
            self._container,
            parked_aggregate_id(feed, partition_key),
            partition_key,
            "quarantine read",
            where=self._where,
        )
        return None if item is None else _marker(item)

    def parked_aggregates(self, feed: str | None = None, limit: int = 100) -> list[ParkedAggregate]:
        where = "WHERE c.kind = @kind "
        parameters: list[dict[str, object]] = [
            {"name": "@limit", "value": limit},
            {"name": "@kind", "value": PARKED_KIND},
        ]
        if feed is not None:
            where += "AND c.feed = @feed "
            parameters.append({"name": "@feed", "value": feed})
        with translate_cosmos_errors("quarantine read", where=self._where):
            items = self._container.query_items(
                f"SELECT TOP @limit * FROM c {where}ORDER BY c.parkedAt",  # noqa: S608 - fixed text
                parameters=parameters,
                enable_cross_partition_query=True,
            )
            return [_marker(item) for item in items]

    def release(self, parked: ParkedAggregate) -> bool:
        with translate_cosmos_errors("quarantine release", where=self._where):
            try:
                self._container.delete_item(
                    parked.id,
                    partition_key=parked.partition_key,
                    etag=parked.version,
                    match_condition=MatchConditions.IfNotModified,
                )
            except CosmosResourceNotFoundError:
                return True  # already released
            except CosmosAccessConditionFailedError:
                return False  # parked again since it was read
        return True

    # Last in the class: below a method named ``list``, ``list[...]`` in an annotation would
    # name the method, not the builtin.
    def list(self, feed: str | None = None, limit: int = 100) -> list[QuarantineRecord]:
        where = "WHERE NOT IS_DEFINED(c.kind) "
        if feed is not None:
            where += "AND c.feed = @feed "
        parameters: list[dict[str, object]] = [{"name": "@limit", "value": limit}]
        if feed is not None:
            parameters.append({"name": "@feed", "value": feed})
        with translate_cosmos_errors("quarantine read", where=self._where):
            items = self._container.query_items(
                f"SELECT TOP @limit * FROM c {where}ORDER BY c.quarantinedAt",  # noqa: S608 - fixed text
                parameters=parameters,
                enable_cross_partition_query=True,
            )
            return [QuarantineRecord.from_document(item) for item in items]


class CosmosInbox:
    """The idempotent consumer's inbox: partition key ``/consumer``, one document per
    (consumer, event id) with id = event id, and one position document per stream
    (``kind = "position"``). Claims are conditional writes: create (409 = taken), replace and
    delete under the ``_etag`` read (412 = changed since). Records carry a ``ttl``: the
    container must have TTL on (the topology's inbox container has a default TTL).

    Records written before claims (``{"id", "consumer"}`` only) read as done, any payload.
    """

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container
        self._where = location_of(container)

    def entry(self, consumer: str, event_id: str) -> InboxEntry | None:
        item = read_item_or_none(
            self._container, event_id, consumer, "inbox read", where=self._where
        )
        return None if item is None else _entry(item)

    def create(
        self,
        consumer: str,
        event_id: str,
        digest: str,
        claim_expires_at: datetime,
        ttl_seconds: int,
    ) -> InboxEntry | None:
        body = {
            "id": event_id,
            "consumer": consumer,
            "state": InboxState.IN_PROGRESS.value,
            "payloadHash": digest,
            "claimExpiresAt": claim_expires_at.isoformat(),
            "ttl": ttl_seconds,
        }
        with translate_cosmos_errors("inbox claim", where=self._where):
            try:
                return _entry(self._container.create_item(body))
            except CosmosResourceExistsError:
                return None

    def _replace(self, entry: InboxEntry, body: dict[str, Any]) -> InboxEntry | None:
        with translate_cosmos_errors("inbox write", where=self._where):
            try:
                item = self._container.replace_item(
                    entry.event_id,
                    body,
                    etag=entry.version,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
                return None
        return _entry(item)

    def take_over(
        self, entry: InboxEntry, claim_expires_at: datetime, ttl_seconds: int
    ) -> InboxEntry | None:
        return self._replace(
            entry, _entry_document(entry, entry.state, claim_expires_at, ttl_seconds)
        )

    def complete(self, entry: InboxEntry, ttl_seconds: int) -> bool:
        body = _entry_document(entry, InboxState.DONE, entry.claim_expires_at, ttl_seconds)
        return self._replace(entry, body) is not None

    def release(self, entry: InboxEntry) -> None:
        with translate_cosmos_errors("inbox release", where=self._where):
            try:
                self._container.delete_item(
                    entry.event_id,
                    partition_key=entry.consumer,
                    etag=entry.version,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (CosmosAccessConditionFailedError, CosmosResourceNotFoundError):
                return  # taken over or gone: not ours to release any more

    def position(self, consumer: str, source: str, partition_key: str) -> Position | None:
        item = read_item_or_none(
            self._container,
            position_id(consumer, source, partition_key),
            consumer,
            "inbox position read",
            where=self._where,
        )
        return None if item is None else _position(item)

    def save_position(self, consumer: str, position: Position, expected: Position | None) -> bool:
        document_id = position_id(consumer, position.source, position.partition_key)
        body = {
            "id": document_id,
            "consumer": consumer,
            "kind": POSITION_KIND,
            "source": position.source,
            "streamPartitionKey": position.partition_key,
            "sequence": position.sequence,
            "ttl": -1,
        }
        with translate_cosmos_errors("inbox position write", where=self._where):
            try:
                if expected is None:
                    self._container.create_item(body)
                else:
                    self._container.replace_item(
                        document_id,
                        body,
                        etag=expected.version,
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (
                CosmosResourceExistsError,
                CosmosAccessConditionFailedError,
                CosmosResourceNotFoundError,
            ):
                return False
        return True


_NEVER: Final = datetime.min.replace(tzinfo=UTC)


def _entry(item: Mapping[str, Any]) -> InboxEntry:
    state = item.get("state")
    digest = item.get("payloadHash")
    expires = item.get("claimExpiresAt")
    return InboxEntry(
        consumer=str(item["consumer"]),
        event_id=str(item["id"]),
        state=InboxState.IN_PROGRESS if state == InboxState.IN_PROGRESS.value else InboxState.DONE,
        payload_hash=digest if isinstance(digest, str) else None,
        claim_expires_at=datetime.fromisoformat(expires) if isinstance(expires, str) else _NEVER,
        version=str(item["_etag"]),
    )


def _entry_document(
    entry: InboxEntry, state: InboxState, claim_expires_at: datetime, ttl_seconds: int
) -> dict[str, Any]:
    return {
        "id": entry.event_id,
        "consumer": entry.consumer,
        "state": state.value,
        "payloadHash": entry.payload_hash,
        "claimExpiresAt": claim_expires_at.isoformat(),
        "ttl": ttl_seconds,
    }


def _position(item: Mapping[str, Any]) -> Position:
    return Position(
        source=str(item["source"]),
        partition_key=str(item["streamPartitionKey"]),
        sequence=int(item["sequence"]),
        version=str(item["_etag"]),
    )
