"""Parked aggregates under any interleaving of relay batches and re-drives (hypothesis).

Changes of two aggregates, some invalid, go through the relay in batches of any size; between
batches an operator fixes what is quarantined and re-drives an aggregate, sometimes while the
relay handles its next batch in the middle of that re-drive (after the re-drive listed the
records, or right after the relay's own parked check). Whatever the interleaving:
- no change of an aggregate is published after a later one (per session, ``sequence`` only
  increases);
- once everything is fixed and re-driven, every change was published exactly once and
  nothing stays quarantined or parked.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from events.core.messages import CLOUDEVENTS_PREFIX
from events.core.publisher import InMemoryPublisher
from events.core.quarantine import InMemoryQuarantine
from events.hosts.redrive import redrive_aggregate
from events.hosts.runtime import Runtime
from tests import factories
from tests.interleaving import Interleaving

FEED = "relay_orders"
KEYS = ("a", "b")

Doc = dict[str, Any]


@st.composite
def changes(draw: st.DrawFn) -> list[Doc]:
    """Outbox changes of two aggregates in change order (``_lsn`` = position), some invalid."""
    result: list[Doc] = []
    for lsn in range(1, draw(st.integers(min_value=1, max_value=12)) + 1):
        change = factories.placed(draw(st.sampled_from(KEYS)), f"e-{lsn}")
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            change["data"]["totalCents"] = "4200"  # invalid: a string
        change["_lsn"] = lsn
        result.append(change)
    return result


Step = tuple[str, int, str]

steps = st.lists(
    st.tuples(
        st.sampled_from(["batch", "redrive", "redrive-during-batch", "batch-during-redrive"]),
        st.integers(min_value=1, max_value=5),
        st.sampled_from(KEYS),
    ),
    max_size=10,
)


def _fix(quarantine: InMemoryQuarantine) -> None:
    """The operator's fix: every stored document gets a valid total."""
    for record in list(quarantine.records.values()):
        if record.document is not None:
            fixed = copy.deepcopy(dict(record.document))
            fixed["data"]["totalCents"] = 4200
            quarantine.records[record.id] = dataclasses.replace(record, document=fixed)


class World:
    def __init__(self, pending: list[Doc]) -> None:
        self.store = Interleaving()
        self.runtime: Runtime
        self.publisher: InMemoryPublisher
        self.runtime, self.publisher, _ = factories.in_memory_runtime(quarantine=self.store)
        self.pending = pending

    def batch(self, size: int) -> None:
        taken, self.pending = self.pending[:size], self.pending[size:]
        if taken:
            self.runtime.relay(FEED).process(copy.deepcopy(taken))

    def redrive(self, key: str) -> None:
        _fix(self.store)
        redrive_aggregate(FEED, key, self.runtime, self.store)


@given(pending=changes(), plan=steps)
def test_relay_and_redrive_any_interleaving_keep_change_order_and_lose_nothing(
    pending: list[Doc], plan: list[Step]
) -> None:
    world = World(list(pending))
    for kind, size, key in plan:
        if kind == "batch":
            world.batch(size)
        elif kind == "redrive":
            world.redrive(key)
        elif kind == "batch-during-redrive":
            world.store.after_records_of = lambda size=size: world.batch(size)
            world.redrive(key)
            world.store.after_records_of = None
        else:  # the re-drive runs right after the relay's parked check of the next batch
            world.store.after_parked = lambda key=key: world.redrive(key)
            world.batch(size)
            world.store.after_parked = None
    world.batch(len(world.pending))
    for _ in range(2):
        for key in KEYS:
            world.redrive(key)

    delivered = world.publisher.delivered["integration-events"]
    for key in KEYS:
        sequences = [
            int(m.application_properties[f"{CLOUDEVENTS_PREFIX}sequence"])
            for m in delivered
            if m.session_id == key
        ]
        assert sequences == sorted(set(sequences)), f"aggregate {key}: out of change order"
    assert sorted(m.message_id for m in delivered) == sorted(
        factories.outbox_id(str(c["partitionKey"]), str(c["id"])) for c in pending
    )
    assert world.store.records == {}
    assert world.store.parks == {}
