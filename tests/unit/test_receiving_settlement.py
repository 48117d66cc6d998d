"""Settlement of a received message by what handling it did (events.adapters.receiving), and
the ``consume`` command's configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from events.adapters.receiving import settlement
from events.errors import (
    InvalidDocumentError,
    PublishUnavailableError,
    SettingsError,
    StoreUnavailableError,
)
from events.hosts.consumers import UnreadableMessageError

ROOT = Path(__file__).resolve().parents[2]


def test_settlement_handled_or_duplicate_completes() -> None:
    assert settlement(None) == "complete"


@pytest.mark.parametrize(
    "error",
    [
        UnreadableMessageError("message m-1 is not an integration event (data)"),
        InvalidDocumentError("bad"),
        SettingsError("missing"),
    ],
)
def test_settlement_permanent_error_dead_letters(error: Exception) -> None:
    assert settlement(error) == "dead-letter"


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailableError("503"),
        PublishUnavailableError("down"),
        RuntimeError("a bug in a handler"),
        KeyError("orderId"),
    ],
)
def test_settlement_transient_error_or_bug_abandons(error: Exception) -> None:
    assert settlement(error) == "abandon"


def _consume(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "events", "consume", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_consume_command_without_settings_exits_2_naming_them() -> None:
    result = _consume("--duration", "1")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "RELAY_COSMOS" in line
    assert "RELAY_SERVICEBUS" in line


def test_consume_command_zero_receivers_exits_2() -> None:
    result = _consume("--receivers", "0")

    assert result.returncode == 2
    assert "--receivers" in result.stderr


def test_consume_command_unknown_consumer_exits_2_listing_the_declared_ones() -> None:
    result = _consume("--consumer", "nobody", "--duration", "1")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "no consumer 'nobody' is declared (declared: order-status)" in line
