"""The chaos test's verdict: what was lost, duplicated, reordered or wrongly quarantined.

Pure: it compares the plan and the expected ids with what the receivers recorded and the
quarantine records found (container, document id), so its own tests need no servers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Set
from dataclasses import dataclass

from tests.chaos.receiver import Received
from tests.chaos.workload import Plan

__all__ = ["CDC_TYPES", "Verdict", "judge"]

#: Event types that come from CDC: checked by each order's final state, not by id.
CDC_TYPES = frozenset({"OrderUpserted", "OrderDeleted"})


@dataclass(frozen=True)
class Verdict:
    expected: int
    received: int
    lost: int
    duplicates: int
    order_violations: int
    cdc_final_missing: int
    unexpected_events: int
    poison: int
    quarantined: int
    poison_missing: tuple[tuple[str, str], ...]
    unexpected_quarantined: tuple[tuple[str, str], ...]
    #: The first violations: (destination, session id, sequence before, sequence after).
    out_of_order: tuple[tuple[str, str, int, int], ...] = ()

    @property
    def complete(self) -> bool:
        return self.lost == 0 and self.cdc_final_missing == 0 and not self.poison_missing

    def __str__(self) -> str:
        return (
            f"lost={self.lost} duplicates={self.duplicates} "
            f"order_violations={self.order_violations} "
            f"cdc_final_states_missing={self.cdc_final_missing} "
            f"unexpected_events={self.unexpected_events} "
            f"quarantined={self.quarantined}/{self.poison} "
            f"unexpected_quarantined={len(self.unexpected_quarantined)} "
            f"(expected events {self.expected}, received messages {self.received})"
        )


def judge(
    plan: Plan,
    expected: Mapping[str, str],
    received: Received,
    quarantined: Set[tuple[str, str]],
) -> Verdict:
    """``expected``: event id -> destination; ``quarantined``: (container, document id)."""
    with received.lock:
        ids = set(received.ids)
        types = dict(received.types)
        sequences = {key: list(values) for key, values in received.sequences.items()}
        cdc = dict(received.cdc_states)
        duplicates = len(received.duplicates)
    lost = sum(1 for event_id, dest in expected.items() if (dest, event_id) not in ids)
    out_of_order = [
        (destination, session, before, after)
        for (destination, session), values in sorted(sequences.items())
        for before, after in itertools.pairwise(values)
        if after < before  # equal: changes written in one transaction share their _lsn
    ]
    cdc_missing = sum(
        1
        for order, (status, total) in plan.final_states.items()
        if cdc.get(order, (0, "", 0))[1:] != (status, total)
    )
    unexpected = sum(
        1
        for _, message_id in ids
        if message_id not in expected and types[message_id] not in CDC_TYPES
    )
    records = set(quarantined)
    return Verdict(
        expected=len(expected),
        received=len(ids),
        lost=lost,
        duplicates=duplicates,
        order_violations=len(out_of_order),
        out_of_order=tuple(out_of_order[:10]),
        cdc_final_missing=cdc_missing,
        unexpected_events=unexpected,
        poison=len(plan.poison),
        quarantined=len(records & plan.poison),
        poison_missing=tuple(sorted(plan.poison - records)),
        unexpected_quarantined=tuple(sorted(records - plan.poison)),
    )
