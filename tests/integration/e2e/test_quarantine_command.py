"""`python -m events quarantine list|redrive` against the local servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.demo import local_stack, relay_environment
from events.adapters.cosmos.stores import CosmosQuarantine
from events.deployment.topology import load_topology
from events.hosts.runtime import Runtime
from tests import factories

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "events", "quarantine", *args, "--insecure-local"],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quarantine_commands_list_then_redrive_keeps_an_invalid_aggregate_parked(
    tmp_path: Path,
) -> None:
    topology = load_topology()
    with local_stack(topology, tmp_path) as (cosmos, bus):
        env = relay_environment(cosmos, bus)
        runtime = Runtime.from_environment(env, verify_tls=False)
        runtime.relay("relay_orders").process(
            [factories.order("o-1", status="teleported"), factories.shipped("o-1", "e-2")]
        )

        listed = _command(env, "list")
        redriven = _command(env, "redrive")
        after = _command(env, "list")

        container = (
            cosmos.client()
            .get_database_client(topology.cosmos.database)
            .get_container_client("quarantine")
        )
        remaining = CosmosQuarantine(container).list()
        published = bus.stats.messages.get("integration-events", 0)

    assert listed.returncode == 0, listed.stderr
    assert "reason=invalid-document" in listed.stdout
    assert "reason=blocked-behind-quarantined-change" in listed.stdout
    assert "2 quarantined record(s)" in listed.stdout
    assert redriven.returncode == 1  # one document is still invalid: its aggregate stays parked
    assert "aggregate=o-1 feed=relay_orders still parked" in redriven.stdout
    assert "re-driven=0 still-quarantined=2" in redriven.stdout
    assert "2 quarantined record(s)" in after.stdout
    assert sorted(r.document_id for r in remaining) == ["e-2", "o-1"]
    assert published == 0  # the later change is not published ahead of the invalid one
