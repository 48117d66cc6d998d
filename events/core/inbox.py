"""The transactional inbox: a handler's writes and the event's inbox record in ONE batch.

The receiving half of idempotent receivers. The handler gets the event and a ``UnitOfWork``
on the consumer's own store, scoped to one partition key value: it reads documents of that
partition and collects create / upsert / replace / patch / delete operations. The consumer
then commits, in one transactional batch of that partition:

1. the inbox record (id derived from consumer and event id, with the payload hash): a
   *create*, so a second commit for the same event id conflicts and nothing of it is written;
2. the stream position (``events.core.ordering``), when the partition is the event's own
   partition key: replaced under the etag read before the handler ran (or created);
3. the handler's operations.

All or nothing: the effect exists exactly once across crashes and redeliveries. A conflict on
the record means the event is done: ``Outcome.duplicate``. A record with another payload hash
raises ``PayloadMismatchError``. A lost race on the position or on a document replaced under
its etag raises ``InboxConflictError`` (transient: the redelivery reads again). The handler
must keep its effects inside the unit of work: anything else it does (an e-mail, a call) may
run again on a redelivery, as with the idempotent consumer.

Limits of one batch (Cosmos DB): one logical partition, 100 operations, 2 MB, counting the
record and the position (https://learn.microsoft.com/azure/cosmos-db/nosql/transactional-batch).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from events.core.consumer import (
    DEFAULT_RETENTION_SECONDS,
    Outcome,
    log_late,
    mismatch_error,
    payload_hash,
    skipped_duplicate,
)
from events.core.envelope import IntegrationEvent, deterministic_id
from events.core.ordering import (
    POSITION_KIND,
    Arrival,
    GapReport,
    OrderPolicy,
    Position,
    arrival_of,
    position_id,
    sequence_number,
)
from events.core.telemetry import consume_span
from events.errors import (
    DuplicateEventError,
    InboxConflictError,
    InboxError,
    InboxTooLargeError,
    InboxTooManyOperationsError,
    RelayError,
)

__all__ = [
    "INBOX_KIND",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_OPERATIONS",
    "InMemoryTransactionalInbox",
    "InboxRecord",
    "Operation",
    "PositionWrite",
    "TransactionalConsumer",
    "TransactionalInbox",
    "UnitOfWork",
    "apply_patch",
    "position_document",
    "position_of",
    "record_conflict",
]

logger = logging.getLogger(__name__)

MAX_BATCH_OPERATIONS: Final = 100
MAX_BATCH_BYTES: Final = 2 * 1024 * 1024
#: ``kind`` of an inbox record in the consumer's container.
INBOX_KIND: Final = "inbox"

OperationKind = Literal["create", "upsert", "replace", "patch", "delete"]


@dataclass(frozen=True)
class Operation:
    """One write of a unit of work. ``body`` for create/upsert/replace, ``patch`` for patch
    (Cosmos DB patch operations: ``{"op": "set", "path": "/a", "value": 1}``), ``if_match``
    an etag read before (replace, delete)."""

    kind: OperationKind
    document_id: str
    body: Mapping[str, Any] | None = None
    patch: tuple[Mapping[str, Any], ...] = ()
    if_match: str | None = None

    def size(self) -> int:
        value: object = self.body if self.body is not None else list(self.patch)
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _document_id(document: Mapping[str, Any]) -> str:
    value = document.get("id")
    if not isinstance(value, str) or not value:
        raise InboxError("a document of the unit of work has no string 'id'")
    return value


class UnitOfWork:
    """The writes of one handler run, for ONE partition key value of the consumer's store.

    ``read`` answers what is committed (not the operations collected so far)."""

    def __init__(self, partition_key: str, reader: Callable[[str], dict[str, Any] | None]) -> None:
        self.partition_key = partition_key
        self._reader = reader
        self._operations: list[Operation] = []

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(self._operations)

    def read(self, document_id: str) -> dict[str, Any] | None:
        return self._reader(document_id)

    def create(self, document: Mapping[str, Any]) -> None:
        self._operations.append(Operation("create", _document_id(document), dict(document)))

    def upsert(self, document: Mapping[str, Any]) -> None:
        self._operations.append(Operation("upsert", _document_id(document), dict(document)))

    def replace(self, document: Mapping[str, Any], *, if_match: str | None = None) -> None:
        self._operations.append(
            Operation("replace", _document_id(document), dict(document), if_match=if_match)
        )

    def patch(self, document_id: str, operations: Sequence[Mapping[str, Any]]) -> None:
        self._operations.append(
            Operation("patch", document_id, patch=tuple(dict(op) for op in operations))
        )

    def delete(self, document_id: str, *, if_match: str | None = None) -> None:
        self._operations.append(Operation("delete", document_id, if_match=if_match))


@dataclass(frozen=True)
class InboxRecord:
    """The record committed with a handler's writes; stores add the partition key field."""

    consumer: str
    event_id: str
    payload_hash: str
    ttl_seconds: int

    @property
    def id(self) -> str:
        return record_id(self.consumer, self.event_id)

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": INBOX_KIND,
            "consumer": self.consumer,
            "eventId": self.event_id,
            "payloadHash": self.payload_hash,
            "ttl": self.ttl_seconds,
        }


def record_id(consumer: str, event_id: str) -> str:
    return f"inbox-{deterministic_id(consumer, event_id)}"


@dataclass(frozen=True)
class PositionWrite:
    """The new position of a stream, written if the stored one is still ``expected``."""

    consumer: str
    position: Position
    expected: Position | None


def position_document(write: PositionWrite) -> dict[str, Any]:
    """A position document (no ``ttl``: kept for as long as the container keeps documents)."""
    position = write.position
    return {
        "id": position_id(write.consumer, position.source, position.partition_key),
        "kind": POSITION_KIND,
        "consumer": write.consumer,
        "source": position.source,
        "streamPartitionKey": position.partition_key,
        "sequence": position.sequence,
        "ttl": -1,
    }


def position_of(document: Mapping[str, Any]) -> Position:
    return Position(
        source=str(document["source"]),
        partition_key=str(document["streamPartitionKey"]),
        sequence=int(document["sequence"]),
        version=str(document["_etag"]),
    )


def record_conflict(
    record: InboxRecord, event: IntegrationEvent, stored: Mapping[str, Any] | None
) -> InboxError:
    """The error for a record that exists already: a duplicate, or the id with another payload."""
    recorded = None if stored is None else stored.get("payloadHash")
    if isinstance(recorded, str) and recorded != record.payload_hash:
        return mismatch_error(record.consumer, event, recorded, record.payload_hash)
    return DuplicateEventError(
        f"consumer {record.consumer} handled event {record.event_id} already",
        status=409,
        ids={"consumer": record.consumer, "event": record.event_id},
    )


def _check_limits(operations: Sequence[Operation], ids: Mapping[str, str]) -> None:
    if len(operations) > MAX_BATCH_OPERATIONS:
        raise InboxTooManyOperationsError(
            f"{len(operations)} operations; a transactional batch holds at most "
            f"{MAX_BATCH_OPERATIONS} (the inbox record and the position count)",
            size=len(operations),
            limit=MAX_BATCH_OPERATIONS,
            ids=ids,
        )
    size = sum(operation.size() for operation in operations)
    if size > MAX_BATCH_BYTES:
        raise InboxTooLargeError(
            f"the batch is {size} bytes; a transactional batch holds at most {MAX_BATCH_BYTES}",
            size=size,
            limit=MAX_BATCH_BYTES,
            ids=ids,
        )


class TransactionalInbox(Protocol):
    """A consumer's own store: point reads, and all-or-nothing commits in one partition."""

    def read(self, partition_key: str, document_id: str) -> dict[str, Any] | None: ...

    def commit(
        self,
        event: IntegrationEvent,
        record: InboxRecord,
        partition_key: str,
        operations: Sequence[Operation],
        position: PositionWrite | None = None,
    ) -> None:
        """Write the record (create), the position and the operations, or nothing.

        Raises ``DuplicateEventError`` / ``PayloadMismatchError`` when the record exists,
        ``InboxConflictError`` when the position or an etag changed, ``InboxError`` for an
        operation refused otherwise, ``StoreUnavailableError`` when the store is down."""
        ...


def apply_patch(document: dict[str, Any], operations: Sequence[Mapping[str, Any]]) -> None:
    """Apply Cosmos DB patch operations (add, set, replace, remove, incr) in place; paths
    are JSON pointers to object members. Raises KeyError or TypeError when one cannot apply."""
    for operation in operations:
        kind = str(operation["op"]).lower()
        *parents, name = [
            part.replace("~1", "/").replace("~0", "~")
            for part in str(operation["path"]).lstrip("/").split("/")
        ]
        target: Any = document
        for part in parents:
            target = target[part]
        if not isinstance(target, dict):
            raise TypeError(f"{operation['path']} is not inside an object")
        if kind in ("add", "set"):
            target[name] = copy.deepcopy(operation["value"])
        elif kind == "replace":
            if name not in target:
                raise KeyError(name)
            target[name] = copy.deepcopy(operation["value"])
        elif kind == "remove":
            del target[name]
        elif kind == "incr":
            current = target.get(name, 0)
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise TypeError(f"{operation['path']} is not a number")
            target[name] = current + operation["value"]
        else:
            raise KeyError(f"patch operation {kind!r}")


class InMemoryTransactionalInbox:
    """A real in-memory backend: documents per partition, etags, TTL, all-or-nothing commits
    that refuse like Cosmos DB (409 exists, 404 missing, 412 stale etag)."""

    def __init__(
        self,
        partition_key_path: str = "/partitionKey",
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._field = partition_key_path.strip("/")
        self._clock = clock
        self._documents: dict[tuple[str, str], dict[str, Any]] = {}
        self._etags = 0
        self.commits = 0

    def documents(self, partition_key: str) -> list[dict[str, Any]]:
        """Every live document of one partition (for tests and the demo)."""
        now = self._clock().timestamp()
        return [
            copy.deepcopy(d)
            for (pk, _), d in sorted(self._documents.items())
            if pk == partition_key and _alive(d, now)
        ]

    def read(self, partition_key: str, document_id: str) -> dict[str, Any] | None:
        found = self._documents.get((partition_key, document_id))
        if found is None or not _alive(found, self._clock().timestamp()):
            return None
        return copy.deepcopy(found)

    def commit(
        self,
        event: IntegrationEvent,
        record: InboxRecord,
        partition_key: str,
        operations: Sequence[Operation],
        position: PositionWrite | None = None,
    ) -> None:
        documents = {
            key: value
            for key, value in self._documents.items()
            if _alive(value, self._clock().timestamp())
        }
        work = dict(documents)
        own: list[Operation] = [Operation("create", record.id, record.document())]
        if position is not None:
            body = position_document(position)
            expected = position.expected
            own.append(
                Operation("create", body["id"], body)
                if expected is None
                else Operation("replace", body["id"], body, if_match=expected.version)
            )
        for index, operation in enumerate([*own, *operations]):
            status = self._apply(work, partition_key, operation, owned=index < len(own))
            if status is None:
                continue
            if index == 0:
                raise record_conflict(record, event, self.read(partition_key, record.id))
            ids = {"consumer": record.consumer, "event": record.event_id}
            if index < len(own):
                raise InboxConflictError(
                    f"the position of stream {event.partitionkey} changed meanwhile",
                    status=status,
                    ids=ids,
                )
            raise _operation_refused(status, operation, ids)
        self._documents = work
        self.commits += 1

    def _apply(
        self,
        work: dict[tuple[str, str], dict[str, Any]],
        partition_key: str,
        operation: Operation,
        *,
        owned: bool,
    ) -> int | None:
        """Apply one operation to ``work``; the status it fails with, or None."""
        key = (partition_key, operation.document_id)
        current = work.get(key)
        if operation.if_match is not None and (
            current is None or current["_etag"] != operation.if_match
        ):
            return 412 if current is not None else 404
        if operation.kind == "delete":
            if current is None:
                return 404
            del work[key]
            return None
        if operation.kind == "patch":
            if current is None:
                return 404
            patched = copy.deepcopy(current)
            try:
                apply_patch(patched, operation.patch)
            except (KeyError, TypeError, IndexError):
                return 400
            work[key] = self._stamp(patched)
            return None
        if operation.kind == "create" and current is not None:
            return 409
        if operation.kind == "replace" and current is None:
            return 404
        body = copy.deepcopy(dict(operation.body or {}))
        if owned:
            body[self._field] = partition_key
        elif body.get(self._field) != partition_key:
            return 400
        work[key] = self._stamp(body)
        return None

    def _stamp(self, document: dict[str, Any]) -> dict[str, Any]:
        self._etags += 1
        document["_etag"] = f'"{self._etags}"'
        document["_ts"] = self._clock().timestamp()
        return document


def _alive(document: Mapping[str, Any], now: float) -> bool:
    ttl = document.get("ttl")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        return True
    return float(document["_ts"]) + ttl > now


#: Status of a refused operation of the handler -> its error (the in-memory table; Cosmos DB's
#: is ``events.adapters.cosmos.errors.BATCH_ERRORS["inbox"]``).
_REFUSED: Final[Mapping[int, type[RelayError]]] = {
    409: InboxError,
    412: InboxConflictError,
    413: InboxTooLargeError,
}


def _operation_refused(status: int, operation: Operation, ids: Mapping[str, str]) -> RelayError:
    kind = _REFUSED.get(status, InboxError)
    return kind(
        f"{operation.kind} of document {operation.document_id} refused ({status}); nothing written",
        status=status,
        ids={**ids, "document": operation.document_id},
    )


class TransactionalConsumer:
    """Handle each event once per consumer, its writes committed with its inbox record.

    ``partition_key`` picks the partition of the consumer's store the handler writes to
    (default: the event's partition key). With an ``ordering`` policy, the stream position
    is kept in that partition, in the same batch, when it is the event's own partition key;
    otherwise order is not tracked (every event counts as in order). Without a policy
    (default) order is not tracked at all.
    """

    def __init__(
        self,
        name: str,
        inbox: TransactionalInbox,
        handler: Callable[[IntegrationEvent, UnitOfWork], None],
        *,
        partition_key: Callable[[IntegrationEvent], str] = lambda event: event.partitionkey,
        ordering: OrderPolicy | None = None,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self.name = name
        self._inbox = inbox
        self._handler = handler
        self._partition_key = partition_key
        self._ordering = ordering
        self._retention = retention_seconds
        self.handled = 0
        self.duplicates = 0
        self.late = 0

    def handle(self, event: IntegrationEvent) -> Outcome:
        """Run the handler and commit its unit of work with the inbox record, once.

        Raises ``PayloadMismatchError`` (permanent) for a known id with another payload,
        ``InboxConflictError`` (transient) when a concurrent delivery changed what the
        handler read, other ``InboxError``s (permanent) when the batch is refused. Exceptions
        of the handler propagate; nothing is written then.
        """
        partition_key = self._partition_key(event)
        record = InboxRecord(self.name, event.id, payload_hash(event), self._retention)
        stored = self._inbox.read(partition_key, record.id)
        if stored is not None:
            return self._duplicate(record_conflict(record, event, stored), event)
        policy = self._ordering
        sequence = None if policy is None else sequence_number(event)
        tracked = sequence is not None and partition_key == event.partitionkey
        last: Position | None = None
        arrival: Arrival | None = None
        if policy is not None and tracked and sequence is not None:
            document = self._inbox.read(
                partition_key, position_id(self.name, event.source, event.partitionkey)
            )
            last = None if document is None else position_of(document)
            arrival = arrival_of(last, sequence, contiguous=policy.contiguous(event))
        unit = UnitOfWork(partition_key, lambda i: self._inbox.read(partition_key, i))
        if policy is not None and arrival is Arrival.LATE and last and sequence is not None:
            log_late(self.name, event, last.sequence, sequence)
            self.late += 1
            if not policy.handle_late:
                # The record alone: a redelivery of this late event is a duplicate.
                try:
                    self._commit(event, record, unit, None)
                except DuplicateEventError as exc:
                    return self._duplicate(exc, event)
                return Outcome(handled=False, duplicate=False, late=True)
        if policy is not None and arrival is Arrival.GAP and last and sequence is not None:
            policy.on_gap(
                GapReport(
                    self.name, event.id, event.source, event.partitionkey, last.sequence, sequence
                )
            )
        with consume_span(self.name, event):
            self._handler(event, unit)
        position = None
        if arrival is not None and arrival is not Arrival.LATE and sequence is not None:
            position = PositionWrite(
                self.name, Position(event.source, event.partitionkey, sequence), last
            )
        try:
            self._commit(event, record, unit, position)
        except DuplicateEventError as exc:
            return self._duplicate(exc, event)
        self.handled += 1
        return Outcome(
            handled=True,
            duplicate=False,
            late=arrival is Arrival.LATE,
            gap=arrival is Arrival.GAP,
        )

    def _commit(
        self,
        event: IntegrationEvent,
        record: InboxRecord,
        unit: UnitOfWork,
        position: PositionWrite | None,
    ) -> None:
        own = [Operation("create", record.id, record.document())]
        if position is not None:
            own.append(Operation("upsert", "position", position_document(position)))
        _check_limits([*own, *unit.operations], {"consumer": self.name, "event": event.id})
        self._inbox.commit(event, record, unit.partition_key, unit.operations, position)

    def _duplicate(self, error: InboxError, event: IntegrationEvent) -> Outcome:
        if not isinstance(error, DuplicateEventError):
            raise error
        self.duplicates += 1
        return skipped_duplicate(self.name, event)
