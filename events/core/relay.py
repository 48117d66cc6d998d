"""One change-feed batch, end to end: map in order, quarantine what cannot be published,
publish the rest, and report. The relay does no I/O of its own: the publisher and the
quarantine store are injected.

The contract with every host: ``process`` returns only when every event of the batch is on
Service Bus or its document is quarantined, and raises nothing but ``TransientError``; then
the host must redeliver the same batch without moving its checkpoint.

The rule that makes this hold for any document: mapping is pure, so ANY exception while
mapping one document (its partition key, its source, its contract, its envelope, its message,
the size check) is permanent for that document: it is quarantined with the reason, the error
type and message, and its aggregate is parked. Only I/O (the parked-aggregate check, the
quarantine write, the publish, the park, a ``TransientError`` from the size check) is
transient; any other exception escaping I/O is reported as transient too, since retrying is
the only safe answer when it is not known what was written.

Parked aggregates: before mapping, one question to the quarantine store says which aggregates
of the batch are parked by an earlier batch, each from which ``_lsn`` on; a change of a parked
aggregate from that ``_lsn`` on (a change before it is one delivered again, published before),
or of one parked earlier in this batch, is quarantined behind it
(``blocked-behind-quarantined-change``) unless it fails on its own (then its own reason is
kept). The writes go records, then publish, then park: a batch that fails before its end parks
nothing, so its retry maps exactly as the first attempt did, and the next batch runs only
after this one parked its aggregates.

Chunks: a batch of more than ``chunk_documents`` documents (``CHUNK_DOCUMENTS``, 500) is
planned, quarantined and published chunk after chunk, in change order, so that the messages
held at once (encodings, SDK objects) follow the chunk, not the batch. The aggregates
quarantined in one chunk stay blocked in the next ones, exactly as within one chunk, and are
parked once, after the last chunk. So per aggregate the outcome does not depend on the chunk
size: its changes before its first quarantined one are published, every later one is
quarantined behind it. What changes with chunks is only when: an earlier chunk's events may
be on Service Bus before a later chunk's documents are quarantined. The batch still counts
as done only when its last chunk is; a failure in any chunk raises, parks nothing, and the
retry relays the whole batch again (chunks already sent go out again with the same message
ids: duplicate detection drops them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from events.core.contracts import ContractRegistry, describe_validation_error
from events.core.documents import Document, partition_key_value
from events.core.messages import OutgoingMessage, Router, to_message
from events.core.publisher import Publisher
from events.core.quarantine import QuarantineReason, QuarantineRecord, QuarantineStore
from events.core.sources import Source, SourceContext
from events.core.telemetry import link_writers, relay_batch
from events.errors import (
    EventTooLargeError,
    InvalidDocumentError,
    MappingError,
    PublishUnavailableError,
    StoreUnavailableError,
    TransientError,
)
from events.fencing import FencedError

__all__ = ["CHUNK_DOCUMENTS", "BatchOutcome", "Feed", "Relay"]

logger = logging.getLogger(__name__)

_UNKNOWN = "<unknown>"
#: Service Bus session ids (the partition key value) hold at most 128 characters.
_MAX_SESSION_ID = 128
#: Documents planned, quarantined and published together (see the module docstring).
CHUNK_DOCUMENTS = 500


@dataclass(frozen=True)
class Feed:
    """A monitored container and the sources that turn its documents into events."""

    name: str
    container: str
    partition_key_path: str
    sources: tuple[Source, ...]
    source_uri: str
    contracts: ContractRegistry

    def context(self) -> SourceContext:
        return SourceContext(
            source_uri=self.source_uri, container=self.container, contracts=self.contracts
        )


@dataclass(frozen=True)
class BatchOutcome:
    """What became of a batch. ``documents == mapped + quarantined + skipped``, where
    ``mapped`` documents produced ``published`` events (``events`` is the same number)."""

    documents: int
    events: int
    published: int
    quarantined: int
    skipped: int
    sends: int


@dataclass
class _Plan:
    """One chunk's messages and records; ``blocked`` and ``parked`` span the batch."""

    messages: list[OutgoingMessage]
    quarantined: list[QuarantineRecord]
    #: Aggregates quarantined earlier in this batch (any chunk).
    blocked: set[str]
    #: Aggregates parked by an earlier batch, each with the ``_lsn`` its parking starts from.
    parked: dict[str, int | None] = field(default_factory=dict)
    skipped: int = 0


@dataclass
class _Tally:
    """What the chunks of a batch added up to, and the ``_lsn`` of each aggregate's records
    (what parking needs once the chunks' records and messages are gone)."""

    events: int = 0
    quarantined: int = 0
    skipped: int = 0
    sends: int = 0
    parks: dict[str, list[int | None]] = field(default_factory=dict)


class _Parked(Exception):  # noqa: N818 - a control-flow signal, never raised out of the relay
    """This document's aggregate is parked behind an earlier quarantined change."""


def _behind(document: Document, partition_key: str, parked: dict[str, int | None]) -> bool:
    """Whether the change waits behind its aggregate's parking: it comes at or after the first
    parked change (or one of the two ``_lsn`` is unknown). A change before it is one delivered
    again after its batch finished: it was published then, and is again (a duplicate)."""
    if partition_key not in parked:
        return False
    first = parked[partition_key]
    lsn = document.get("_lsn")
    if first is None or isinstance(lsn, bool) or not isinstance(lsn, int):
        return True
    return lsn >= first


def _reason(error: Exception) -> QuarantineReason:
    if isinstance(error, _Parked):
        return QuarantineReason.BLOCKED_BEHIND_QUARANTINED
    if isinstance(error, EventTooLargeError):
        return QuarantineReason.EVENT_TOO_LARGE
    if isinstance(error, InvalidDocumentError | ValidationError):
        return QuarantineReason.INVALID_DOCUMENT
    if isinstance(error, MappingError):
        return QuarantineReason.UNMAPPABLE
    return QuarantineReason.MAPPING_FAILED


def _error_text(error: Exception) -> str:
    """The error for the record: our own messages name fields, never values; foreign
    exceptions keep only their type in the log, their text in the record (in the database)."""
    if isinstance(error, ValidationError):
        return f"event envelope invalid: {describe_validation_error(error)}"
    if isinstance(error, _Parked):
        return "an earlier change of this aggregate is quarantined"
    return str(error) or type(error).__name__


def _printable(text: str) -> str:
    """Text as is, or escaped when it holds line breaks or other unprintable characters (a
    document id must not be able to forge log lines)."""
    return text if text.isprintable() else ascii(text)


class Relay:
    def __init__(
        self,
        feed: Feed,
        publisher: Publisher,
        quarantine: QuarantineStore,
        router: Router,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        chunk_documents: int = CHUNK_DOCUMENTS,
    ) -> None:
        if chunk_documents < 1:
            raise ValueError("chunk_documents must be at least 1")
        self.feed = feed
        self._chunk = chunk_documents
        self._publisher = publisher
        self._quarantine = quarantine
        self._router = router
        self._clock = clock
        self._context = feed.context()

    def process(self, documents: Sequence[Document], *, parked_check: bool = True) -> BatchOutcome:
        """Relay one batch. ``parked_check=False`` is for a re-drive only: it republishes a
        parked aggregate's own records, in change order, so they must not wait behind it."""
        with relay_batch(self.feed.name, self.feed.container, len(documents)) as batch:
            outcome = self._relay(documents, parked_check=parked_check)
            batch.finished(
                published=outcome.published,
                quarantined=outcome.quarantined,
                skipped=outcome.skipped,
                sends=outcome.sends,
            )
            return outcome

    def _relay(self, documents: Sequence[Document], *, parked_check: bool) -> BatchOutcome:
        parked = self._parked(documents) if parked_check else {}
        blocked: set[str] = set()
        tally = _Tally()
        for start in range(0, len(documents), self._chunk):
            self._relay_chunk(documents, start, _Plan([], [], blocked, parked), tally)
        self._park_aggregates(tally.parks, parked)
        outcome = BatchOutcome(
            documents=len(documents),
            events=tally.events,
            published=tally.events,
            quarantined=tally.quarantined,
            skipped=tally.skipped,
            sends=tally.sends,
        )
        logger.info(
            "batch relayed feed=%s documents=%d published=%d quarantined=%d skipped=%d sends=%d",
            self.feed.name,
            outcome.documents,
            outcome.published,
            outcome.quarantined,
            outcome.skipped,
            outcome.sends,
        )
        return outcome

    def _relay_chunk(
        self, documents: Sequence[Document], start: int, plan: _Plan, tally: _Tally
    ) -> None:
        """Plan, quarantine and publish ``documents[start:start + chunk]``. The plan (the
        chunk's messages with their encodings) is dropped on return, before the next chunk."""
        for index in range(start, min(start + self._chunk, len(documents))):
            self._plan_one(documents[index], plan)
        for record in plan.quarantined:
            self._store(record)
            if record.partition_key != _UNKNOWN:
                tally.parks.setdefault(record.partition_key, []).append(record.lsn)
        if plan.messages:
            tally.sends += self._publish(plan.messages)
        tally.events += len(plan.messages)
        tally.quarantined += len(plan.quarantined)
        tally.skipped += plan.skipped

    def _plan_one(self, document: Document, plan: _Plan) -> None:
        partition_key = _UNKNOWN
        try:
            partition_key = self._partition_key(document)
            messages = self._map(document, partition_key)
            if partition_key in plan.blocked or _behind(document, partition_key, plan.parked):
                raise _Parked
        except TransientError:
            raise  # the size check could not reach the broker: retry the whole batch
        except Exception as exc:  # noqa: BLE001 - mapping is pure: any failure is this document's
            self._park(document, partition_key, exc, plan)
            return
        if messages is None:
            plan.skipped += 1
        else:
            plan.messages.extend(messages)

    def _partition_key(self, document: Document) -> str:
        value = partition_key_value(document, self.feed.partition_key_path)
        if len(value) > _MAX_SESSION_ID:
            raise InvalidDocumentError(
                f"partition key value is longer than {_MAX_SESSION_ID} characters, "
                "the Service Bus session id limit"
            )
        return value

    def _map(self, document: Document, partition_key: str) -> list[OutgoingMessage] | None:
        """The document's messages, size-checked; None when no source publishes anything for
        it (no source claims it, or its source keeps it private)."""
        source = next((s for s in self.feed.sources if s.claims(document)), None)
        if source is None:
            return None
        events = source.to_events(document, partition_key, self._context)
        if not events:
            return None
        # Publish what the check returns: it carries the encoding the check measured.
        return [self._publisher.check(to_message(event, self._router)) for event in events]

    def _parked(self, documents: Iterable[Document]) -> dict[str, int | None]:
        """The aggregates of this batch that an earlier batch parked, each with the ``_lsn``
        its parking starts from: one store request."""
        keys: set[str] = set()
        for document in documents:
            try:
                keys.add(partition_key_value(document, self.feed.partition_key_path))
            except Exception:  # noqa: BLE001, S112 - such a document is quarantined when planned
                continue
        if not keys:
            return {}
        try:
            return self._quarantine.parked(self.feed.name, keys)
        except TransientError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(
                f"parked-aggregate check of feed {self.feed.name} failed: {type(exc).__name__}"
            ) from exc

    def _park_aggregates(
        self, first: dict[str, list[int | None]], parked: dict[str, int | None]
    ) -> None:
        """Park every aggregate quarantined in this batch (``first``: the ``_lsn`` of its
        records, every chunk's), from its first parked change on: the lowest ``_lsn`` among its
        records of this batch and its earlier parking (None, so every change waits, when one of
        them is unknown)."""
        at = self._clock()
        for partition_key in sorted(first):
            lsns = first[partition_key]
            if partition_key in parked:
                lsns.append(parked[partition_key])
            known = [lsn for lsn in lsns if lsn is not None]
            from_lsn = min(known) if len(known) == len(lsns) else None
            try:
                self._quarantine.park(self.feed.name, partition_key, at, from_lsn)
            except TransientError:
                raise
            except Exception as exc:
                raise StoreUnavailableError(
                    f"parking aggregate {_printable(partition_key)} of feed {self.feed.name} "
                    f"failed: {type(exc).__name__}"
                ) from exc

    def _store(self, record: QuarantineRecord) -> None:
        try:
            self._quarantine.put(record)
        except TransientError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(
                f"quarantine write of {record.id} failed: {type(exc).__name__}"
            ) from exc

    def _publish(self, messages: list[OutgoingMessage]) -> int:
        link_writers(messages)  # the batch span, to each writer's trace
        try:
            return self._publisher.publish(messages)
        except (TransientError, FencedError):
            raise
        except Exception as exc:
            raise PublishUnavailableError(
                f"publishing {len(messages)} messages failed: {type(exc).__name__}"
            ) from exc

    def _park(self, document: Document, partition_key: str, error: Exception, plan: _Plan) -> None:
        reason = _reason(error)
        record = QuarantineRecord.of(
            document,
            feed=self.feed.name,
            container=self.feed.container,
            partition_key=partition_key,
            reason=reason,
            error=_error_text(error),
            error_type=type(error).__name__,
            quarantined_at=self._clock(),
        )
        plan.quarantined.append(record)
        if partition_key != _UNKNOWN:
            plan.blocked.add(partition_key)
        # Our own errors name fields, never values; a foreign error's text may hold a value,
        # so only its type is logged (the record keeps the text, inside the database).
        detail = record.error if isinstance(error, MappingError | ValidationError) else ""
        logger.warning(
            "document quarantined feed=%s document_id=%s lsn=%s quarantine_id=%s reason=%s "
            "error_type=%s %s",
            self.feed.name,
            _printable(record.document_id),
            record.lsn,
            record.id,
            reason.value,
            record.error_type,
            detail,
            extra={
                "document_id": record.document_id,
                "lsn": record.lsn,
                "quarantine_id": record.id,
                "error_type": record.error_type,
            },
        )
