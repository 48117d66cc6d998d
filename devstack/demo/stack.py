"""The local servers, the relay process and the declared consumers' process the demo runs on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.cosmos import CosmosClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from devstack.cosmos import LocalCosmos, quiet_loopback_tls_warnings
from devstack.provision import provision_cosmos
from devstack.servicebus import LocalServiceBus
from events.deployment import settings as names
from events.deployment.topology import Topology

__all__ = [
    "ROOT",
    "DeclaredConsumers",
    "Relay",
    "local_stack",
    "pooled_client",
    "relay_environment",
    "spawn_relay",
]

ROOT = Path(__file__).resolve().parents[2]


def spawn_relay(
    env: Mapping[str, str], log_path: Path, instance_id: str
) -> subprocess.Popen[bytes]:
    """``python -m events run`` with the dev stack's short leases (``Relay.OPTIONS``) as a
    child in its own session, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "events", "run", *Relay.OPTIONS, "--instance-id", instance_id],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Relay:
    """The relay as a child process: ``python -m events run`` with the dev-stack settings."""

    #: Short leases so that a restarted relay takes over a killed one's feed within seconds.
    OPTIONS: tuple[str, ...] = (
        "--insecure-local",
        "--lease-duration",
        "6",
        "--renew-interval",
        "2",
        "--poll-interval",
        "0.3",
        "--acquire-interval",
        "1",
    )

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self._process = spawn_relay(self._env, self._log_path, f"relay-{self.starts}")
        self.starts += 1

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


class DeclaredConsumers:
    """The declaration's consumers as a child process: ``python -m events consume`` with the
    dev-stack settings, its output appended to ``log_path``."""

    RECEIVERS = 2

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self._env = env
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "events", "consume", "--insecure-local"),
                    *("--receivers", str(self.RECEIVERS)),
                ],
                cwd=ROOT,
                env={**os.environ, **self._env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def pooled_client(cosmos: LocalCosmos, connections: int) -> CosmosClient:
    """A client for ``cosmos`` that keeps up to ``connections`` connections open.

    The default pool keeps 10, and urllib3 warns each time a thread returns an 11th; the demo
    consumer's threads all use one inbox client.
    """
    quiet_loopback_tls_warnings()
    session = requests.Session()
    # What azure-core mounts on a session it creates itself (its pipeline retries, not urllib3).
    no_retries = Retry(total=False, redirect=False, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=no_retries, pool_maxsize=connections)
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return CosmosClient(
        cosmos.endpoint,
        credential=cosmos.key,
        connection_verify=False,
        transport=RequestsTransport(session=session, session_owner=True),
    )


def relay_environment(cosmos: LocalCosmos, bus: LocalServiceBus) -> dict[str, str]:
    return {
        names.COSMOS_CONNECTION: cosmos.connection_string,
        names.SERVICEBUS_CONNECTION: bus.connection_string,
    }


@contextlib.contextmanager
def local_stack(
    topology: Topology, data_dir: Path
) -> Iterator[tuple[LocalCosmos, LocalServiceBus]]:
    with (
        LocalCosmos(data_file=data_dir / "cosmos.json") as cosmos,
        LocalServiceBus(topology) as bus,
    ):
        provision_cosmos(cosmos.client(), topology)
        yield cosmos, bus
