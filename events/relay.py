"""One change-feed batch, end to end: map in order, quarantine what cannot be published,
publish the rest, and report. The relay does no I/O of its own: the publisher and the
quarantine store are injected.

The contract with every host: ``process`` returns only when every event of the batch is on
Service Bus or its document is quarantined. Anything else raises a TransientError and the
host must redeliver the same batch without moving its checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from events.contracts import ContractRegistry
from events.documents import Document, partition_key_value
from events.errors import EventTooLargeError, InvalidDocumentError, MappingError
from events.messages import OutgoingMessage, Router, to_message
from events.publisher import Publisher
from events.quarantine import QuarantineReason, QuarantineRecord, QuarantineStore
from events.sources import Source, SourceContext

__all__ = ["BatchOutcome", "Feed", "Relay"]

logger = logging.getLogger(__name__)

_UNKNOWN = "<unknown>"


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
    documents: int
    events: int
    published: int
    quarantined: int
    skipped: int
    sends: int


@dataclass
class _Plan:
    messages: list[OutgoingMessage]
    quarantined: list[QuarantineRecord]
    blocked: set[str]
    skipped: int = 0


class Relay:
    def __init__(
        self,
        feed: Feed,
        publisher: Publisher,
        quarantine: QuarantineStore,
        router: Router,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.feed = feed
        self._publisher = publisher
        self._quarantine = quarantine
        self._router = router
        self._clock = clock
        self._context = feed.context()

    def process(self, documents: Sequence[Document]) -> BatchOutcome:
        plan = _Plan(messages=[], quarantined=[], blocked=set())
        for document in documents:
            self._plan_one(document, plan)
        for record in plan.quarantined:
            self._quarantine.put(record)
        sends = self._publisher.publish(plan.messages) if plan.messages else 0
        outcome = BatchOutcome(
            documents=len(documents),
            events=len(plan.messages),
            published=len(plan.messages),
            quarantined=len(plan.quarantined),
            skipped=plan.skipped,
            sends=sends,
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

    def _plan_one(self, document: Document, plan: _Plan) -> None:
        try:
            partition_key = partition_key_value(document, self.feed.partition_key_path)
        except InvalidDocumentError as exc:
            self._park(document, _UNKNOWN, QuarantineReason.INVALID_DOCUMENT, exc, plan)
            return
        if partition_key in plan.blocked:
            error = MappingError("an earlier change of this aggregate is quarantined")
            self._park(
                document, partition_key, QuarantineReason.BLOCKED_BEHIND_QUARANTINED, error, plan
            )
            return
        source = next((s for s in self.feed.sources if s.claims(document)), None)
        if source is None:
            plan.skipped += 1
            return
        try:
            events = source.to_events(document, partition_key, self._context)
            messages = [to_message(event, self._router) for event in events]
            for message in messages:
                self._publisher.check(message)
        except InvalidDocumentError as exc:
            self._park(document, partition_key, QuarantineReason.INVALID_DOCUMENT, exc, plan)
        except ValidationError as exc:
            problem = InvalidDocumentError(f"event envelope invalid: {exc.error_count()} errors")
            self._park(document, partition_key, QuarantineReason.INVALID_DOCUMENT, problem, plan)
        except MappingError as exc:
            self._park(document, partition_key, QuarantineReason.UNMAPPABLE, exc, plan)
        except EventTooLargeError as exc:
            self._park(document, partition_key, QuarantineReason.EVENT_TOO_LARGE, exc, plan)
        else:
            plan.messages.extend(messages)

    def _park(
        self,
        document: Document,
        partition_key: str,
        reason: QuarantineReason,
        error: Exception,
        plan: _Plan,
    ) -> None:
        doc_id = document.get("id")
        lsn = document.get("_lsn")
        record = QuarantineRecord(
            feed=self.feed.name,
            container=self.feed.container,
            document_id=doc_id if isinstance(doc_id, str) else _UNKNOWN,
            partition_key=partition_key,
            lsn=lsn if isinstance(lsn, int) and not isinstance(lsn, bool) else None,
            reason=reason,
            error=str(error),
            quarantined_at=self._clock(),
            document=document,
        )
        plan.quarantined.append(record)
        if partition_key != _UNKNOWN:
            plan.blocked.add(partition_key)
        logger.warning(
            "document quarantined feed=%s reason=%s",
            self.feed.name,
            reason.value,
            extra={
                "document_id": record.document_id,
                "lsn": record.lsn,
                "quarantine_id": record.id,
                "error_type": type(error).__name__,
            },
        )
