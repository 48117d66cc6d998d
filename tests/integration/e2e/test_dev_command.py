"""`python -m events dev` (what `make run` runs): the whole flow, then a summary line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SUMMARY = re.compile(r"^written=(\d+) published=(\d+) received=(\d+) duplicates=(\d+) lost=(\d+)$")


def _processes_mentioning(*needles: str) -> list[int]:
    """Pids whose command line or environment contains any of the needles."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(needle.encode() in text for needle in needles):
            found.append(int(entry.name))
    return found


def test_dev_command_runs_the_flow_and_ends_with_the_summary_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "events", "dev", "--duration", "6", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    last = result.stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, result.stdout[-2000:] + result.stderr[-2000:]
    written, published, received, _duplicates, lost = (int(g) for g in match.groups())
    assert result.returncode == 0
    assert written > 0
    assert received == written
    assert published >= written
    assert lost == 0
    data_dir = re.search(r"data and relay log in (\S+)", result.stdout)
    endpoint = re.search(r"^cosmos\s+(\S+)", result.stdout, re.MULTILINE)
    assert data_dir is not None
    assert endpoint is not None
    # No server or relay outlives the command.
    assert _processes_mentioning(data_dir.group(1), endpoint.group(1)) == []
