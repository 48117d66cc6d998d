"""``python -m events check --offline``: each rule passes on the shipped declaration and fails,
naming itself, on a declaration that breaks it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from events.deployment.topology import DEFAULT_TOPOLOGY
from events.hosts.check import RuleResult, check_declaration, longest_retry_delay

ROOT = Path(__file__).resolve().parents[2]
Edit = Callable[[dict[str, Any]], None]


def _declaration(tmp_path: Path, edit: Edit) -> Path:
    raw: dict[str, Any] = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _failed(results: list[RuleResult]) -> dict[str, str]:
    return {r.rule: r.why for r in results if not r.passed}


def _container(raw: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in raw["cosmos"]["containers"] if c["name"] == name)
    return found


def test_check_declaration_shipped_example_passes_every_rule() -> None:
    results, topology = check_declaration(DEFAULT_TOPOLOGY)

    assert topology is not None
    assert _failed(results) == {}
    assert [r.rule for r in results] == [
        "declaration",
        "duplicate-detection",
        "dedup-window",
        "outbox-ttl",
        "lease-partition-key",
        "lease-prefixes",
        "sessions",
        "routes",
        "consumers",
    ]


def test_longest_retry_delay_functions_maximum_interval_five_minutes() -> None:
    assert longest_retry_delay()[0] == 300


def _no_dedup(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["queues"][0]["requiresDuplicateDetection"] = False


def _short_window(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["topics"][0]["duplicateDetectionHistoryTimeWindow"] = "PT2M"


def _lease_key(raw: dict[str, Any]) -> None:
    _container(raw, "leases")["partitionKey"] = "/partitionKey"


def _short_outbox(raw: dict[str, Any]) -> None:
    raw["cosmos"]["outboxTtlSeconds"] = 600


def _overlapping_prefix(raw: dict[str, Any]) -> None:
    _container(raw, "eventstore")["feed"]["leasePrefix"] = "relay-orders.events."


def _unordered_queue(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["queues"][0]["requiresSession"] = False


def _unknown_route(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["routes"]["PaymentCaptured"] = "no-such-queue"


def _consumer_without_sessions(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["consumers"][0]["subscription"] = "orders-placed"


def _consumer_unknown_subscription(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["consumers"][0]["subscription"] = "no-such-subscription"


def _consumer_handler_missing(raw: dict[str, Any]) -> None:
    raw["serviceBus"]["consumers"][0]["handler"] = "events.nowhere:handle"


@pytest.mark.parametrize(
    ("edit", "rule", "named"),
    [
        (_no_dedup, "duplicate-detection", "payments"),
        (_short_window, "dedup-window", "integration-events window 120 s"),
        (_lease_key, "lease-partition-key", "/partitionKey"),
        (_short_outbox, "outbox-ttl", "600 s"),
        (_overlapping_prefix, "lease-prefixes", "relay-orders.events."),
        (_unordered_queue, "sessions", "queue payments"),
        (_unknown_route, "routes", "no-such-queue"),
        (_consumer_without_sessions, "consumers", "does not require sessions"),
        (_consumer_unknown_subscription, "consumers", "no such subscription"),
        (_consumer_handler_missing, "consumers", "events.nowhere"),
    ],
)
def test_check_declaration_broken_rule_fails_naming_it(
    tmp_path: Path, edit: Edit, rule: str, named: str
) -> None:
    results, _ = check_declaration(_declaration(tmp_path, edit))

    failed = _failed(results)
    assert rule in failed
    assert named in failed[rule]
    # Only the broken rule (and the loader, for what it refuses itself) fails.
    assert set(failed) <= {rule, "declaration"}


def test_check_declaration_unreadable_file_one_failing_rule(tmp_path: Path) -> None:
    path = tmp_path / "topology.json"
    path.write_text("{not json", encoding="utf-8")

    results, topology = check_declaration(path)

    assert topology is None
    assert [(r.rule, r.passed) for r in results] == [("declaration", False)]


def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "events", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_command_window_shorter_than_retry_exits_1_one_line_per_rule(
    tmp_path: Path,
) -> None:
    result = _command(
        "check", "--offline", "--declaration", str(_declaration(tmp_path, _short_window))
    )

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 10  # nine rules and the summary
    assert [line for line in lines if line.startswith("FAIL")] == [
        next(line for line in lines if line.startswith("FAIL dedup-window:"))
    ]
    assert lines[-1] == "9 rules: 8 passed, 1 failed"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["help"],
        ["run", "--help"],
        ["consume", "--help"],
        ["dev", "--help"],
        ["schemas", "--help"],
        ["quarantine", "--help"],
        ["provision", "--help"],
        ["check", "--help"],
    ],
)
def test_events_help_any_command_exits_0_with_usage(argv: list[str]) -> None:
    result = _command(*argv)

    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower() or "python -m events" in result.stdout


def test_events_unknown_command_exits_2_naming_it() -> None:
    result = _command("frobnicate")

    assert result.returncode == 2
    assert "frobnicate" in result.stderr
