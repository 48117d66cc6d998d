"""Running a foreground dev-stack command the way a person does: start, read, stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def first_line_then_sigterm(module: str, *args: str, timeout: float = 20.0) -> tuple[str, int]:
    """Start ``python -m module args``, wait for its first stdout line, send SIGTERM.

    Returns that line and the exit code; the process never outlives the call.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    return first, code


def run_events(
    env: dict[str, str], *args: str, timeout: float = 90.0
) -> subprocess.CompletedProcess[str]:
    """``python -m events args`` to its end (at most ``timeout`` s), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "events", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
