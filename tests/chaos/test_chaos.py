"""Seeded chaos: thousands of documents over hundreds of aggregates, written with the real
Cosmos DB SDK while the relay process is SIGKILLed, its broker connection dropped and
black-holed and Cosmos DB goes away; then everything must be on Service Bus exactly once, in
order per aggregate, and every poison document in the quarantine.

The seed (``CHAOS_SEED``, default below) decides the workload and the fault schedule; it is
printed first so a failure can be replayed: ``CHAOS_SEED=N .venv/bin/pytest tests/chaos -s``.
Timing still varies between runs (which batch a fault hits), as it does in production.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from azure.cosmos import ContainerProxy
from azure.servicebus import ServiceBusClient

from devstack.faultproxy import FaultProxy
from devstack.provision import provision_cosmos
from devstack.servicebus import LocalServiceBus
from events.deployment import settings as names
from events.deployment.topology import load_topology
from tests.chaos.faults import CosmosServer, Injector, RelayProcess, fault_schedule
from tests.chaos.receiver import Received, drain
from tests.chaos.verdict import judge
from tests.chaos.workload import (
    INTEGRATION_EVENTS,
    PAYMENTS,
    Expected,
    Writer,
    build_plan,
    describe,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

DEFAULT_SEED = 20261127
#: After the last fault: time for the relay to take its lease back and drain.
SETTLE_SECONDS = 75.0
#: After everything arrived: late duplicates would show up in this time.
GRACE_SECONDS = 3.0
#: Receiver threads per destination (each holds one session at a time).
RECEIVERS = {INTEGRATION_EVENTS: 9, PAYMENTS: 3}
#: A restarted relay takes a killed one's leases over once they expire (6 s in Relay.OPTIONS).
TAKEOVER_SECONDS = 8.0
#: The broker took no new message for this long: the relay is (probably) caught up.
QUIET_SECONDS = 2.0


LOOPBACK_TLS_WARNING = "Unverified HTTPS request is being made to host '127.0.0.1'"


def _wait_until_quiet(stack: Stack, deadline: float) -> None:
    """Until a relay has run long enough to take the leases over and the broker has taken
    nothing new for a moment: draining earlier would reopen sessions for nothing."""
    messages = -1
    while time.monotonic() < deadline:
        stack.relay.ensure_running()
        now = sum(stack.bus.stats.messages.values())
        if now == messages and time.monotonic() - stack.relay.started_at > TAKEOVER_SECONDS:
            return
        messages = now
        time.sleep(QUIET_SECONDS)


def _clock(began: float) -> str:
    """Seconds since the start, and the wall clock (to find the moment in the relay's log)."""
    return f"{time.monotonic() - began:6.1f}s {datetime.now().strftime('%H:%M:%S.%f')[:-3]}"


def chaos_seed() -> int:
    return int(os.environ.get("CHAOS_SEED", DEFAULT_SEED))


def quarantine_records(quarantine: ContainerProxy) -> set[tuple[str, str]]:
    """(container, document id) of every record in the quarantine container."""
    return {
        (str(r["container"]), str(r["documentId"]))
        for r in quarantine.query_items(
            # Records only: parked-aggregate markers (with a `kind`) name no document.
            "SELECT c.container, c.documentId FROM c WHERE NOT IS_DEFINED(c.kind)",
            enable_cross_partition_query=True,
        )
    }


@dataclass
class Stack:
    cosmos: CosmosServer
    bus: LocalServiceBus
    broker_proxy: FaultProxy
    relay: RelayProcess


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    topology = load_topology()
    cosmos = CosmosServer(tmp_path / "cosmos.json")
    cosmos.start()
    relay: RelayProcess | None = None
    try:
        provision_cosmos(cosmos.client(), topology)
        with (
            LocalServiceBus(topology) as bus,
            FaultProxy(("127.0.0.1", bus.port), name="broker-proxy") as proxy,
        ):
            env = {
                names.COSMOS_CONNECTION: cosmos.connection_string,
                # The relay reaches the broker only through the proxy; receivers go direct.
                names.SERVICEBUS_CONNECTION: bus.connection_string.replace(
                    f":{bus.port};", f":{proxy.port};"
                ),
                # --insecure-local still lets urllib3 warn on every request to the local server.
                "PYTHONWARNINGS": f"ignore:{LOOPBACK_TLS_WARNING}",
            }
            relay = RelayProcess(env, tmp_path / "relay.log")
            try:
                yield Stack(cosmos, bus, proxy, relay)
            finally:
                relay.stop()
    finally:
        if relay is not None:
            relay.kill()
        cosmos.stop()


def test_chaos_relay_under_seeded_faults_loses_duplicates_and_reorders_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker logs every write to a connection the faults cut (an expected consequence).
    caplog.set_level(logging.CRITICAL, logger="proton")
    seed = chaos_seed()
    print(f"\nchaos seed={seed} (replay: CHAOS_SEED={seed} .venv/bin/pytest tests/chaos -s)")
    began = time.monotonic()
    plan = build_plan(seed)
    schedule = fault_schedule(seed)
    print(f"workload: {describe(plan)}")
    for fault in schedule:
        print(f"  planned {fault}")
    faults_end = schedule[-1].at + schedule[-1].duration
    write_seconds = max(20.0, faults_end - 3.0)

    database = stack.cosmos.client().get_database_client(load_topology().cosmos.database)
    quarantine = database.get_container_client("quarantine")
    expected = Expected()
    writer = Writer(database, plan, expected)
    received = Received()
    injector = Injector(
        stack.relay,
        stack.bus,
        stack.broker_proxy,
        stack.cosmos,
        log=lambda line: print(f"  {_clock(began)} {line}"),
    )
    stop = threading.Event()
    writing = threading.Thread(
        target=writer.run,
        args=(write_seconds, time.monotonic() + write_seconds + 60.0, stop),
        name="chaos-writer",
        daemon=True,
    )
    try:
        stack.relay.start()
        writing.start()
        injector.run(schedule, stop)
        injector.clear()
        writing.join(timeout=write_seconds + 60.0)
    finally:
        stop.set()
        writing.join(timeout=10.0)
    assert not writing.is_alive(), "the writer did not finish"
    assert writer.failure is None, f"the writer failed: {writer.failure!r}"
    print(f"  {_clock(began)} faults over, writes done; settling")

    settle_deadline = time.monotonic() + SETTLE_SECONDS
    with ServiceBusClient.from_connection_string(stack.bus.connection_string) as client:
        while True:
            _wait_until_quiet(stack, settle_deadline)
            drain(client, received, RECEIVERS)
            verdict = judge(plan, expected.snapshot(), received, quarantine_records(quarantine))
            print(f"  {_clock(began)} drained: {verdict}")
            if verdict.complete or time.monotonic() > settle_deadline:
                break
        if verdict.complete:
            time.sleep(GRACE_SECONDS)  # a late duplicate would be on the broker by now
            drain(client, received, RECEIVERS)
            verdict = judge(plan, expected.snapshot(), received, quarantine_records(quarantine))

    faults = " ".join(f"{kind}={n}" for kind, n in sorted(injector.injected.items()))
    print(f"documents written: {plan.documents} (steps {writer.written}, retries {writer.retries})")
    print(f"poison documents: {len(plan.poison)} (skipped hostile documents: {len(plan.skipped)})")
    print(f"faults: {faults}")
    print(
        f"relay starts={stack.relay.starts} unexpected_exits={stack.relay.unexpected_exits} "
        f"fenced_out={stack.relay.log_count('handler fenced out')} "
        f"pages_left_expired={stack.relay.log_count('lease expired before its page')} "
        f"broker dropped_connections={stack.bus.stats.dropped_connections} "
        f"duplicates_absorbed={sum(stack.bus.stats.duplicates.values())} "
        f"proxy resets={stack.broker_proxy.stats.reset} "
        f"receiver redeliveries={received.redeliveries} errors={len(received.receiver_errors)}"
    )
    print(verdict)
    print(f"duration: {time.monotonic() - began:.1f}s")
    if not verdict.complete:
        print(f"poison not quarantined: {verdict.poison_missing}")
        print(f"relay log tail:\n{stack.relay.log_tail()}")
    for destination, session, before, after in verdict.out_of_order:
        print(f"out of order: {destination} session {session}: sequence {after} after {before}")
    if verdict.unexpected_quarantined:
        print(f"quarantined but valid or skipped: {verdict.unexpected_quarantined}")

    assert writer.written == len(plan.steps)
    assert verdict.lost == 0, f"events never arrived (seed {seed})"
    assert verdict.cdc_final_missing == 0, f"orders whose final state never arrived (seed {seed})"
    assert verdict.duplicates == 0, f"duplicates got past duplicate detection (seed {seed})"
    assert verdict.order_violations == 0, f"out of order within a session (seed {seed})"
    assert verdict.unexpected_events == 0, f"events nobody wrote (seed {seed})"
    assert verdict.poison_missing == (), f"poison documents not quarantined (seed {seed})"
    assert verdict.unexpected_quarantined == (), f"valid documents quarantined (seed {seed})"
    assert sum(injector.injected.values()) == len(schedule)
