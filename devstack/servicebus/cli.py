"""``servicebus [--port P] [--topology FILE]``: run the local broker in the foreground.

Prints the connection string once the broker listens (and, on stderr, the administration
endpoint's), and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from events.deployment.topology import DEFAULT_TOPOLOGY
from events.errors import SettingsError

from .errors import LocalServiceBusError
from .server import LocalServiceBus

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servicebus",
        description="Local AMQP 1.0 broker for the azure-servicebus SDK (127.0.0.1 only).",
    )
    parser.add_argument("--port", type=int, default=5672, help="port to listen on (0: any free)")
    parser.add_argument(
        "--admin-port",
        type=int,
        default=0,
        help="HTTPS port of the administration endpoint (0: any free)",
    )
    parser.add_argument(
        "--topology",
        type=Path,
        default=DEFAULT_TOPOLOGY,
        help="topology file with the topics, subscriptions and queues",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bus = LocalServiceBus(args.topology, port=args.port, admin_port=args.admin_port)
        bus.start()
    except (LocalServiceBusError, SettingsError) as exc:
        print(f"servicebus: {exc}", file=sys.stderr)
        return 1
    try:
        print(bus.connection_string, flush=True)
        print(
            "servicebus: administration endpoint (HTTPS, self-signed certificate: "
            f"connection_verify=False): {bus.admin_connection_string}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            if not bus.running:
                print("servicebus: the broker thread ended", file=sys.stderr)
                return 1
    finally:
        bus.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
