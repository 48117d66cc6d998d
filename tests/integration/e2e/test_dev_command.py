"""`python -m events dev` (what `make run` runs): the whole flow, then a summary line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SUMMARY = re.compile(
    r"^written=(?P<written>\d+) cdc=(?P<cdc>\d+) published=(?P<published>\d+) "
    r"received=(?P<received>\d+) duplicates=(?P<duplicates>\d+) lost=(?P<lost>\d+)$"
)


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


@dataclass(frozen=True)
class DevRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, int]
    data_dir: Path
    cosmos_endpoint: str

    @property
    def output(self) -> str:
        return self.stdout[-3000:] + self.stderr[-3000:]


def _dev(*args: str) -> DevRun:
    result = subprocess.run(
        [sys.executable, "-m", "events", "dev", "--duration", "5", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    assert match is not None, result.stdout[-3000:] + result.stderr[-3000:]
    data_dir = re.search(r"data and relay log in (\S+)", result.stdout)
    endpoint = re.search(r"^cosmos\s+(\S+)", result.stdout, re.MULTILINE)
    assert data_dir is not None
    assert endpoint is not None
    return DevRun(
        returncode=result.returncode,
        stdout=result.stdout,
        stderr=result.stderr,
        summary={name: int(value) for name, value in match.groupdict().items()},
        data_dir=Path(data_dir.group(1)),
        cosmos_endpoint=endpoint.group(1),
    )


def test_dev_command_runs_the_flow_ends_with_the_summary_and_leaves_nothing_behind() -> None:
    run = _dev()

    summary = run.summary
    assert run.returncode == 0, run.output
    assert summary["written"] > 0
    assert summary["cdc"] > 0
    assert summary["received"] == summary["written"] + summary["cdc"]
    assert summary["published"] >= summary["written"] + summary["cdc"]
    assert summary["lost"] == 0
    # Event lines, status lines and the drain went through: every line is whole.
    assert re.search(r"^  received OrderPlaced\s+order-\d+", run.stdout, re.MULTILINE)
    assert re.search(r"^drain: everything arrived", run.stdout, re.MULTILINE)
    declared = re.search(
        r"^declared consumer order-status: (\d+) documents in order-status", run.stdout, re.M
    )
    assert declared is not None, run.output
    # No server or relay outlives the command, and the data folder is gone.
    assert _processes_mentioning(str(run.data_dir), run.cosmos_endpoint) == []
    assert not run.data_dir.exists()
    assert "kept in" not in run.stdout


def test_dev_command_keep_data_keeps_and_names_the_data_folder() -> None:
    run = _dev("--quiet", "--keep-data")
    try:
        assert run.returncode == 0, run.output
        assert run.summary["lost"] == 0
        kept = re.search(r"^dev stack data kept in (\S+) ", run.stdout, re.MULTILINE)
        assert kept is not None, run.output
        assert Path(kept.group(1)) == run.data_dir
        assert (run.data_dir / "cosmos.json").is_file()
        assert (run.data_dir / "relay.log").is_file()
        assert "  received " not in run.stdout  # --quiet
        assert _processes_mentioning(str(run.data_dir), run.cosmos_endpoint) == []
    finally:
        shutil.rmtree(run.data_dir, ignore_errors=True)


def test_dev_command_ctrl_c_drains_prints_the_summary_and_removes_the_data_folder() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "events", "dev", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    try:
        # The first status line: the stack is up and the writer is running.
        for line in stdout:
            lines.append(line)
            if re.match(r"^\[\d\d:\d\d:\d\d\] written=", line):
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = "".join(lines) + out
    last = text.strip().splitlines()[-1]
    data_dir = re.search(r"data and relay log in (\S+)", text)
    assert data_dir is not None, text[-3000:] + err[-3000:]
    match = SUMMARY.match(last)
    assert match is not None, text[-3000:] + err[-3000:]
    assert process.returncode == 0
    assert int(match["lost"]) == 0
    assert not Path(data_dir.group(1)).exists()


def test_dev_command_startup_error_reported_exit_2_and_data_folder_removed() -> None:
    # Without `node` on PATH the local Cosmos DB server cannot start.
    result = subprocess.run(
        [sys.executable, "-m", "events", "dev", "--duration", "5"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    data_dir = re.search(r"data and relay log in (\S+)", result.stdout)
    assert data_dir is not None, result.stdout + result.stderr
    assert result.returncode == 2
    assert "dev: DevStackError: `node` is not on PATH" in result.stderr
    assert not Path(data_dir.group(1)).exists()
