"""The chaos test's faults: a seeded schedule, and what injects each fault into the stack.

Kinds (one at a time, in a seeded order, with seeded gaps and durations):

- ``sigkill``: SIGKILL the relay process (no lease release, no checkpoint of the batch in
  flight) and start a new one after a short pause; it takes the feed over once the dead
  relay's lease expires. Variant ``mid-send`` first cuts the broker's answers (one-way
  proxy) until a send lands: it is enqueued but never acknowledged when the relay dies, so
  its successor sends it again and duplicate detection must absorb it.
- ``pause``: SIGSTOP the relay (a VM or GC pause) and start another, which takes the feed
  over once the paused one's lease expires; then SIGCONT the paused one, let both run for a
  few seconds (the old owner resumes in the middle of whatever it was doing: split brain),
  and SIGKILL it.
- ``drop``: the broker closes the relay's connection on a transfer (``mid-transfer``,
  ``LocalServiceBus`` faults, armed for a few seconds: it fires only if the relay sends
  meanwhile), or the proxy in front of the broker resets every connection and refuses new
  ones for a moment (``reset``).
- ``blackhole_broker``: the proxy in front of the broker accepts and forwards nothing for a
  few seconds; then either the partition heals (``heal``: the stalled bytes flow) or every
  stalled connection is reset (``reset``).
- ``cosmos_outage``: the Cosmos DB server is frozen (``freeze``: SIGSTOP, connections accepted
  by the kernel and never answered, a black hole) or stopped and started again on the same
  port with its data file (``restart``: connections refused meanwhile). It hits the test's
  own writer too, which retries, as an application would.

The Cosmos outage is injected at the server, not through a proxy: the SDK reads the account
once through the address it was given, then follows the account's advertised endpoint (the
server's own port), so a proxy would only see the first request.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from azure.cosmos import CosmosClient

from devstack.cosmos import LocalCosmos
from devstack.demo.stack import spawn_relay
from devstack.faultproxy import FaultProxy, Mode
from devstack.servicebus import LocalServiceBus

__all__ = [
    "CosmosServer",
    "Fault",
    "FaultKind",
    "Injector",
    "RelayProcess",
    "fault_schedule",
]


#: A paused relay's lease expires after 6 s (devstack.demo.Relay.OPTIONS); its successor
#: looks for free leases every second.
_TAKEOVER_SECONDS = 8.0
#: How long a resumed relay and its successor both run before the old one is killed.
_BOTH_RUN_SECONDS = 3.0
#: How long the broker's answers are cut, at most, waiting for a send to land before a
#: mid-send SIGKILL (a relay that is still taking its leases over sends nothing).
_MID_SEND_SECONDS = 4.0


class FaultKind(StrEnum):
    SIGKILL = "sigkill"
    PAUSE = "pause"
    DROP = "drop"
    BLACKHOLE_BROKER = "blackhole_broker"
    COSMOS_OUTAGE = "cosmos_outage"


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start of the schedule
    kind: FaultKind
    variant: str
    duration: float  # how long the fault lasts (the relay is down, the proxy dark, ...)
    transfers: int = 0  # mid-transfer drop: transfers that pass before the one that drops

    def __str__(self) -> str:
        extra = f" after {self.transfers} transfers" if self.variant == "mid-transfer" else ""
        return f"t={self.at:5.1f}s {self.kind}/{self.variant} for {self.duration:.1f}s{extra}"


def fault_schedule(seed: int) -> tuple[Fault, ...]:
    """The same seed always gives the same schedule; it ends when its last fault is over."""
    rng = random.Random(seed ^ 0xFA_0175)
    kinds = (
        [FaultKind.SIGKILL] * rng.randint(3, 4)
        + [FaultKind.DROP] * rng.randint(2, 3)
        + [FaultKind.BLACKHOLE_BROKER] * 2
        + [FaultKind.COSMOS_OUTAGE] * 2
    )
    rng.shuffle(kinds)
    # The pause comes first, once the first relay holds its leases (it starts in about 2 s
    # with free leases): later, a recently restarted relay may still be waiting for them.
    kinds.insert(0, FaultKind.PAUSE)
    faults: list[Fault] = []
    at = rng.uniform(5.0, 7.0)
    for kind in kinds:
        if kind is FaultKind.SIGKILL:
            fault = Fault(at, kind, rng.choice(("restart", "mid-send")), rng.uniform(0.5, 2.0))
        elif kind is FaultKind.PAUSE:
            fault = Fault(at, kind, "split-brain", _TAKEOVER_SECONDS + _BOTH_RUN_SECONDS)
        elif kind is FaultKind.DROP:
            if rng.random() < 0.5:
                fault = Fault(at, kind, "mid-transfer", 3.0, transfers=rng.randint(0, 3))
            else:
                fault = Fault(at, kind, "reset", rng.uniform(0.5, 1.5))
        elif kind is FaultKind.BLACKHOLE_BROKER:
            fault = Fault(at, kind, rng.choice(("heal", "reset")), rng.uniform(2.0, 4.0))
        else:
            fault = Fault(at, kind, rng.choice(("freeze", "restart")), rng.uniform(2.0, 3.5))
        faults.append(fault)
        at += fault.duration + rng.uniform(1.2, 3.0)
    return tuple(faults)


class RelayProcess:
    """``python -m events run`` as a child process, with the demo's short leases."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._paused: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0  # time.monotonic() of the last start
        #: Exit codes of relays that ended without being killed by the test.
        self.unexpected_exits: list[int] = []

    def start(self) -> None:
        self._process = spawn_relay(self._env, self._log_path, f"chaos-relay-{self.starts}")
        self.starts += 1
        self.started_at = time.monotonic()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> None:
        """Start a relay if none runs; note it when one ended by itself."""
        if self._process is not None and self._process.poll() is not None:
            self.unexpected_exits.append(self._process.returncode)
            self._process = None
        if self._process is None:
            self.start()

    def pause_and_replace(self) -> None:
        """SIGSTOP the running relay (kept aside) and start a successor."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused, self._process = self._process, None
        self.start()

    def resume_paused(self) -> None:
        if self._paused is not None:
            self._paused.send_signal(signal.SIGCONT)

    def kill_paused(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and paused.poll() is None:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            paused.wait(timeout=10)

    def kill(self) -> None:
        self.kill_paused()
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is not None:
            self.unexpected_exits.append(process.returncode)
            return
        process.kill()
        process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (drain and release the leases), SIGKILL if it does not end in time."""
        self.kill_paused()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_count(self, text: str) -> int:
        """How many lines of every relay's log contain ``text``."""
        log = self._log_path.read_text(encoding="utf-8", errors="replace")
        return sum(text in line for line in log.splitlines())

    def log_tail(self, lines: int = 40) -> str:
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class CosmosServer:
    """The local Cosmos DB server, which can be frozen or restarted on the same port."""

    def __init__(self, data_file: Path) -> None:
        self._data_file = data_file
        self._server = LocalCosmos(data_file=data_file)
        self._port = 0
        self._frozen = False

    def start(self) -> None:
        self._server.start()
        self._port = int(self._server.endpoint.rstrip("/").rsplit(":", 1)[1])

    @property
    def connection_string(self) -> str:
        return self._server.connection_string

    def client(self) -> CosmosClient:
        return self._server.client()

    def freeze(self) -> None:
        pid = self._server.pid
        if pid is not None:
            os.killpg(pid, signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        pid = self._server.pid
        if self._frozen and pid is not None:
            os.killpg(pid, signal.SIGCONT)
        self._frozen = False

    def shut_down(self) -> None:
        """SIGTERM: the server writes its data file and exits; clients are refused."""
        self.thaw()
        self._server.stop()

    def start_again(self) -> None:
        if self._server.is_running():
            return
        self._server = LocalCosmos(port=self._port, data_file=self._data_file)
        self._server.start()

    def stop(self) -> None:
        self.thaw()
        self._server.stop()


class Injector:
    """Applies a schedule to the running stack; ``clear`` undoes every fault."""

    def __init__(
        self,
        relay: RelayProcess,
        bus: LocalServiceBus,
        broker_proxy: FaultProxy,
        cosmos: CosmosServer,
        log: Callable[[str], None],
    ) -> None:
        self._relay = relay
        self._bus = bus
        self._proxy = broker_proxy
        self._cosmos = cosmos
        self._log = log
        self.injected: Counter[FaultKind] = Counter()

    def run(self, schedule: tuple[Fault, ...], stop: threading.Event) -> None:
        start = time.monotonic()
        for fault in schedule:
            if stop.wait(max(0.0, start + fault.at - time.monotonic())):
                return
            self._log(f"fault {fault}")
            self._inject(fault, stop)
            self.injected[fault.kind] += 1
            self.clear()

    def _inject(self, fault: Fault, stop: threading.Event) -> None:
        if fault.kind is FaultKind.SIGKILL:
            if fault.variant == "mid-send":
                self._cut_answers_until_a_send_lands(stop)
            self._relay.kill()
            self._proxy.set_mode(Mode.PASS)
            stop.wait(fault.duration)
            self._relay.start()
        elif fault.kind is FaultKind.PAUSE:
            self._relay.pause_and_replace()
            stop.wait(_TAKEOVER_SECONDS)
            self._relay.resume_paused()
            stop.wait(_BOTH_RUN_SECONDS)
            self._relay.kill_paused()
        elif fault.kind is FaultKind.DROP and fault.variant == "mid-transfer":
            dropped = self._bus.stats.dropped_connections
            self._bus.faults.drop_connection_after(fault.transfers)
            stop.wait(fault.duration)
            self._bus.faults.drop_connection_after(None)
            if self._bus.stats.dropped_connections == dropped:
                self._log("  (the relay sent too little meanwhile: nothing was dropped)")
        elif fault.kind is FaultKind.DROP:
            self._proxy.set_mode(Mode.DROP)
            stop.wait(fault.duration)
        elif fault.kind is FaultKind.BLACKHOLE_BROKER:
            self._proxy.set_mode(Mode.BLACKHOLE)
            stop.wait(fault.duration)
            if fault.variant == "reset":
                self._proxy.set_mode(Mode.DROP)
        elif fault.variant == "freeze":
            self._cosmos.freeze()
            stop.wait(fault.duration)
            self._cosmos.thaw()
        else:
            self._cosmos.shut_down()
            stop.wait(fault.duration)
            self._cosmos.start_again()

    def _cut_answers_until_a_send_lands(self, stop: threading.Event) -> None:
        """One-way proxy until the broker has taken a transfer it cannot acknowledge."""
        transfers = sum(self._bus.stats.transfers.values())
        self._proxy.set_mode(Mode.ONE_WAY)
        deadline = time.monotonic() + _MID_SEND_SECONDS
        while sum(self._bus.stats.transfers.values()) == transfers:
            if stop.wait(0.05) or time.monotonic() > deadline:
                self._log("  (no send landed meanwhile: killed without one in flight)")
                return
        stop.wait(0.2)  # let the rest of the batch's transfers land too

    def clear(self) -> None:
        """Every fault off: the broker and the proxy pass, Cosmos DB serves, a relay runs."""
        self._bus.faults.clear()
        self._proxy.set_mode(Mode.PASS)
        self._cosmos.thaw()
        self._cosmos.start_again()
        self._relay.ensure_running()
