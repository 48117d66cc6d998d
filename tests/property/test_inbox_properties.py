"""Property tests: any interleaving of deliveries, redeliveries and crashes of N events over
consumers sharing one inbox.

A simulated broker holds the undelivered messages (each event once or several times, as a
re-publication would). Each step delivers one pending message to a consumer, with a fate:
``ok`` (completed unless the consumer raised a transient error), ``fail`` (the handler raises
after collecting its writes: abandoned), ``crash`` (handled, then the process dies before the
completion: redelivered) or ``nested`` (the next step runs inside this handler, before its
commit or done mark: two consumers at once). Whatever the schedule, the broker drains at
the end with plain deliveries.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from events.core.consumer import IdempotentConsumer, InMemoryInbox, Outcome
from events.core.envelope import IntegrationEvent, sequence_of
from events.core.inbox import InMemoryTransactionalInbox, TransactionalConsumer, UnitOfWork
from events.core.ordering import OrderPolicy
from events.errors import RelayError

Fate = Literal["ok", "fail", "crash", "nested"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
STREAM = "pay-1"

Deliver = Callable[[int, Fate], Outcome]


class HandlerFailedError(Exception):
    pass


def _event(sequence: int) -> IntegrationEvent:
    return IntegrationEvent(
        id=f"evt-{sequence}",
        source="/eventstore",
        type="PaymentCaptured",
        subject=STREAM,
        time=NOW,
        data={"n": sequence},
        partitionkey=STREAM,
        sequence=sequence_of(sequence),
    )


@dataclass
class Run:
    """The simulated broker and what the consumers did. A message is an index into
    ``sequences``; a locked message (in a handler) is not delivered to anyone else."""

    sequences: list[int]
    steps: list[tuple[int, Fate]]
    pending: list[int] = field(default_factory=list)
    locked: set[int] = field(default_factory=set)
    committed: list[int] = field(default_factory=list)  # sequences, in commit order
    late: list[tuple[int, int]] = field(default_factory=list)  # (sequence, max committed)
    in_handler: Counter[int] = field(default_factory=Counter)
    overlaps: int = 0

    def next_step(self) -> tuple[int, Fate] | None:
        if self.steps:
            return self.steps.pop(0)
        return (0, "ok") if self.available() else None

    def available(self) -> list[int]:
        return [m for m in self.pending if m not in self.locked]


schedules = st.tuples(
    st.lists(st.integers(1, 6), min_size=1, max_size=10),  # deliveries, by sequence
    st.lists(
        st.tuples(st.integers(0, 20), st.sampled_from(["ok", "fail", "crash", "nested"])),
        max_size=30,
    ),
)


def _drive(run: Run, deliver: Deliver) -> None:
    guard = 0
    run.pending = list(range(len(run.sequences)))
    while run.pending:
        guard += 1
        assert guard < 500, "the schedule did not drain"
        step = run.next_step()
        assert step is not None
        _deliver(run, step, deliver)


def _deliver(run: Run, step: tuple[int, Fate], deliver: Deliver) -> None:
    available = run.available()
    if not available:
        return
    choice, fate = step
    message = available[choice % len(available)]
    sequence = run.sequences[message]
    run.locked.add(message)
    try:
        outcome: Outcome = deliver(sequence, fate)
    except HandlerFailedError:
        return  # abandoned: stays pending
    except RelayError as exc:
        if not exc.transient:
            raise
        return  # abandoned: stays pending
    finally:
        run.locked.discard(message)
    if outcome.late:
        run.late.append((sequence, max(run.committed, default=0)))
    if fate != "crash":  # a crash before the completion: the message is redelivered
        run.pending.remove(message)


@given(schedules, st.booleans())
def test_transactional_consumers_any_interleaving_commit_each_effect_exactly_once(
    schedule: tuple[list[int], list[tuple[int, Fate]]], ordered: bool
) -> None:
    deliveries, steps = schedule
    run = Run(sequences=list(deliveries), steps=list(steps))
    inbox = InMemoryTransactionalInbox()
    effects: Counter[str] = Counter()

    def handler_for(fate: Fate) -> Callable[[IntegrationEvent, UnitOfWork], None]:
        def handler(event: IntegrationEvent, unit: UnitOfWork) -> None:
            unit.create(
                {"id": f"effect-{uuid.uuid4()}", "partitionKey": STREAM, "eventId": event.id}
            )
            if fate == "nested":
                step = run.next_step()
                if step is not None:
                    _deliver(run, step, deliver)
            if fate == "fail":
                raise HandlerFailedError

        return handler

    def deliver(sequence: int, fate: Fate) -> Outcome:
        consumer = TransactionalConsumer(
            "ledger",
            inbox,
            handler_for(fate),
            ordering=OrderPolicy() if ordered else None,
        )
        outcome = consumer.handle(_event(sequence))
        if outcome.handled:
            run.committed.append(sequence)
        return outcome

    _drive(run, deliver)

    for document in inbox.documents(STREAM):
        if str(document["id"]).startswith("effect-"):
            effects[str(document["eventId"])] += 1
    handled = {f"evt-{s}" for s in run.committed}
    late = {f"evt-{s}" for s, _ in run.late}
    assert all(count == 1 for count in effects.values()), effects
    assert set(effects) == handled
    assert len(run.committed) == len(handled)  # no event committed twice
    assert handled | late == {f"evt-{s}" for s in deliveries}  # every event: effect or late
    assert handled.isdisjoint(late)
    assert all(sequence < highest for sequence, highest in run.late)  # late = really older
    assert ordered or not late


@given(schedules)
def test_idempotent_consumers_any_interleaving_never_run_an_event_twice_at_once(
    schedule: tuple[list[int], list[tuple[int, Fate]]],
) -> None:
    deliveries, steps = schedule
    run = Run(sequences=list(deliveries), steps=list(steps))
    inbox = InMemoryInbox()
    effects: Counter[int] = Counter()
    crashed_after_effect: set[int] = set()

    def handler_for(fate: Fate) -> Callable[[IntegrationEvent], None]:
        def handler(event: IntegrationEvent) -> None:
            sequence = int(event.data["n"])
            run.in_handler[sequence] += 1
            run.overlaps = max(run.overlaps, run.in_handler[sequence])
            try:
                if fate == "nested":
                    step = run.next_step()
                    if step is not None:
                        _deliver(run, step, deliver)
                if fate == "fail":
                    raise HandlerFailedError
                effects[sequence] += 1
            finally:
                run.in_handler[sequence] -= 1

        return handler

    def deliver(sequence: int, fate: Fate) -> Outcome:
        consumer = IdempotentConsumer(
            "mailer",
            inbox,
            handler_for(fate),
            ordering=OrderPolicy(),
        )
        outcome = consumer.handle(_event(sequence))
        if outcome.handled:
            run.committed.append(sequence)
            if fate == "crash":
                crashed_after_effect.add(sequence)
        return outcome

    _drive(run, deliver)

    assert run.overlaps <= 1  # a live claim keeps a second delivery out of the handler
    late = {s for s, _ in run.late}
    assert set(effects) | late == set(deliveries)
    # A crash here comes after the done mark, so even it leaves each effect once.
    assert all(count == 1 for count in effects.values()), (effects, crashed_after_effect)
    assert all(sequence < highest for sequence, highest in run.late)
