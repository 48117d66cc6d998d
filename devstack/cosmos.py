"""Local Cosmos DB server for development and integration tests.

Runs `devstack/cosmos/launcher.js` (Node, on top of `@vercel/cosmosdb-server`) as a child
process on 127.0.0.1 over HTTPS with a self-signed certificate, and hands out an endpoint, the
well-known emulator key and `azure.cosmos.CosmosClient` objects for it.

    with LocalCosmos() as cosmos:
        client = cosmos.client()

Command line: `python -m devstack.cosmos [--port P] [--data FILE] [--latency MS] [--partitions N]`
runs it in the foreground until SIGINT/SIGTERM. ``latency`` (seconds here, milliseconds on the
command line) holds every response that long: a simulated network round trip to a Cosmos DB
region. ``partitions`` is the number of physical partitions (feed ranges) of each new container
(a container created with more throughput than N partitions hold gets more, as in Azure).

Errors: DevStackError (devstack.errors) when node or `devstack/cosmos/node_modules` is missing,
when the server does not print READY in time, or when it exits early (its stderr is quoted).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from azure.cosmos import CosmosClient
from urllib3.exceptions import InsecureRequestWarning

from devstack.errors import DevStackError
from events.adapters.cosmos.transport import CosmosTransport

__all__ = ["EMULATOR_KEY", "CountingTransport", "DevStackError", "LocalCosmos", "main"]

EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
"""The Cosmos DB emulator's published key; the local server accepts any key."""

SERVER_DIR = Path(__file__).resolve().parent / "cosmos"
_LAUNCHER = SERVER_DIR / "launcher.js"
_READY_PREFIX = "READY "
_STOP_TIMEOUT = 5.0
_MAX_LATENCY = 10.0
MAX_PARTITIONS = 64
# Only requests to the loopback server are quiet; any other unverified HTTPS still warns.
_LOOPBACK_WARNING = r"Unverified HTTPS request is being made to host '127\.0\.0\.1'"


class CountingTransport(CosmosTransport):
    """The relay's HTTP transport (the SDK's own, environment read once), counting the
    requests it sends: what a bench or a test reads to say how many Cosmos DB requests an
    operation cost."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return super().send(request, **kwargs)


def quiet_loopback_tls_warnings() -> None:
    """Silence urllib3's InsecureRequestWarning for 127.0.0.1 only (self-signed certificate)."""
    warnings.filterwarnings("ignore", message=_LOOPBACK_WARNING, category=InsecureRequestWarning)


class LocalCosmos:
    """A local Cosmos DB server in a child process (own process group, stopped at exit)."""

    def __init__(
        self,
        port: int = 0,
        data_file: Path | None = None,
        startup_timeout: float = 15.0,
        latency: float = 0.0,
        partitions: int = 1,
    ) -> None:
        if not 0.0 <= latency <= _MAX_LATENCY:
            raise DevStackError(f"latency must be between 0 and {_MAX_LATENCY} s, not {latency}")
        if isinstance(partitions, bool) or not 1 <= partitions <= MAX_PARTITIONS:
            raise DevStackError(
                f"partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
            )
        self._partitions = partitions
        self._port = port
        self._data_file = data_file
        self._latency = latency
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._endpoint: str | None = None

    @property
    def endpoint(self) -> str:
        """`https://127.0.0.1:PORT/` of the running server."""
        if self._endpoint is None:
            raise DevStackError("the local Cosmos DB server is not started")
        return self._endpoint

    @property
    def key(self) -> str:
        return EMULATOR_KEY

    @property
    def connection_string(self) -> str:
        return f"AccountEndpoint={self.endpoint};AccountKey={self.key};"

    @property
    def pid(self) -> int | None:
        """Process id of the Node server while it runs."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, transport: CountingTransport | None = None) -> CosmosClient:
        """A CosmosClient for this server (certificate not verified: it is self-signed);
        ``transport`` (e.g. a ``CountingTransport``) carries its HTTP requests."""
        quiet_loopback_tls_warnings()
        if transport is None:
            transport = CosmosTransport()
        return CosmosClient(
            self.endpoint, credential=self.key, connection_verify=False, transport=transport
        )

    def start(self) -> None:
        if self._process is not None:
            raise DevStackError("the local Cosmos DB server is already started")
        node = shutil.which("node")
        if node is None:
            raise DevStackError("`node` is not on PATH: install Node.js 18+ (then `make setup`)")
        if not (SERVER_DIR / "node_modules" / "@vercel" / "cosmosdb-server").is_dir():
            raise DevStackError(f"{SERVER_DIR / 'node_modules'} is missing: run `make setup`")
        command = [node, str(_LAUNCHER), "--port", str(self._port)]
        if self._data_file is not None:
            # The server runs in SERVER_DIR: a relative path must not move with it.
            command += ["--data", str(self._data_file.resolve())]
        if self._latency > 0:
            command += ["--latency", f"{self._latency * 1000:g}"]
        if self._partitions != 1:
            command += ["--partitions", str(self._partitions)]
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self._process = subprocess.Popen(
            command,
            cwd=SERVER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._endpoint = self._wait_ready(self._process)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[str]) -> str:
        lines: queue.Queue[str | None] = queue.Queue()

        def drain(stream: IO[str]) -> None:
            # Keeps reading after READY so the pipe never fills and blocks the server.
            for line in stream:
                lines.put(line)
            lines.put(None)

        assert process.stdout is not None
        threading.Thread(target=drain, args=(process.stdout,), daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=self._startup_timeout)
                if line is None:
                    process.wait(timeout=_STOP_TIMEOUT)
                    raise DevStackError(
                        f"the local Cosmos DB server exited with code {process.returncode} "
                        f"before it was ready: {self._stderr_text()}"
                    )
                if line.startswith(_READY_PREFIX):
                    return line[len(_READY_PREFIX) :].strip()
        except queue.Empty:
            raise DevStackError(
                f"the local Cosmos DB server was not ready within {self._startup_timeout} s: "
                f"{self._stderr_text()}"
            ) from None

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().strip() or "(no output on stderr)"

    def stop(self) -> None:
        """SIGTERM the server's process group (it flushes its data file), then SIGKILL."""
        process, self._process = self._process, None
        self._endpoint = None
        atexit.unregister(self.stop)
        if process is not None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=_STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[str], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def main(argv: list[str]) -> int:
    """`cosmos [--port P] [--data FILE] [--latency MS] [--partitions N]`: run until a signal."""
    parser = argparse.ArgumentParser(prog="cosmos", description="Run a local Cosmos DB server.")
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free port)"
    )
    parser.add_argument("--data", type=Path, default=None, help="JSON file that keeps the data")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="hold every response MS milliseconds, a simulated network round trip (default 0)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        metavar="N",
        help="physical partitions (feed ranges) of each new container (default 1)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = LocalCosmos(
            port=args.port,
            data_file=args.data,
            latency=args.latency / 1000,
            partitions=args.partitions,
        )
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        server.start()
        print(f"READY {server.endpoint}", flush=True)
        print(f"COSMOS_ENDPOINT={server.endpoint}", flush=True)
        print(f"COSMOS_CONNECTION_STRING={server.connection_string}", flush=True)
        while not stop.wait(0.2):
            if not server.is_running():
                print("the local Cosmos DB server exited unexpectedly", file=sys.stderr)
                return 1
        return 0
    except DevStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
