"""The chaos test's own invariants: its seeded plan and schedule are reproducible, and the
plan keeps the expected outcome independent of how the relay happens to batch."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tests.chaos.faults import FaultKind, fault_schedule
from tests.chaos.workload import build_plan

SEEDS = (1, 2, 3, 20261127)


@pytest.mark.parametrize("seed", SEEDS)
def test_build_plan_same_seed_same_steps(seed: int) -> None:
    assert build_plan(seed) == build_plan(seed)


def test_build_plan_other_seed_other_steps() -> None:
    assert build_plan(1).steps != build_plan(2).steps


@pytest.mark.parametrize("seed", SEEDS)
def test_build_plan_poison_is_the_last_change_of_its_aggregate(seed: int) -> None:
    plan = build_plan(seed)
    last_step = {step.aggregate: index for index, step in enumerate(plan.steps)}

    for index, step in enumerate(plan.steps):
        if (step.container, step.document.get("id")) in plan.poison:
            assert last_step[step.aggregate] == index, f"{step.hostile} on {step.aggregate}"


@pytest.mark.parametrize("seed", SEEDS)
def test_build_plan_skipped_documents_have_valid_changes_after_them(seed: int) -> None:
    plan = build_plan(seed)
    last_step = {step.aggregate: index for index, step in enumerate(plan.steps)}
    skipped = [
        (index, step)
        for index, step in enumerate(plan.steps)
        if (step.container, step.document.get("id")) in plan.skipped
    ]

    assert skipped
    for index, step in skipped:
        assert last_step[step.aggregate] > index


@pytest.mark.parametrize("seed", SEEDS)
def test_build_plan_thousands_of_documents_over_hundreds_of_aggregates(seed: int) -> None:
    plan = build_plan(seed)

    assert plan.documents >= 1800
    assert plan.aggregates >= 200
    assert len(plan.poison) >= 20


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_schedule_every_kind_one_at_a_time(seed: int) -> None:
    schedule = fault_schedule(seed)
    kinds = Counter(fault.kind for fault in schedule)

    assert schedule == fault_schedule(seed)
    assert set(kinds) == set(FaultKind)
    assert kinds[FaultKind.SIGKILL] >= 3
    for before, after in itertools.pairwise(schedule):
        assert after.at > before.at + before.duration
