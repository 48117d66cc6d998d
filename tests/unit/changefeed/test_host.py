"""The relay host's command line, without servers."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import pytest

from events.deployment.settings import TELEMETRY
from events.hosts.processor import (
    SWITCH_INTERVAL_SECONDS,
    build_parser,
    parse_args,
    parse_start_from,
    run_main,
)


def test_parse_start_from_naive_time_is_utc() -> None:
    assert parse_start_from("2026-01-01T12:00:00") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_start_from("now") == "now"


def test_parse_start_from_garbage_rejected() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--start-from"):
        parse_start_from("yesterday")


def test_build_parser_options_parsed_into_values() -> None:
    args = build_parser().parse_args(
        ["--instance-id", "h1", "--start-from", "beginning", "--duration", "2", "--insecure-local"]
    )

    assert (args.instance_id, args.start_from, args.duration, args.insecure_local) == (
        "h1",
        "beginning",
        2.0,
        True,
    )


def test_parse_args_checkpoint_interval_and_page_size_parsed() -> None:
    args = parse_args(["--checkpoint-interval", "0.5", "--max-items", "250"])
    default = parse_args([])

    assert (args.checkpoint_interval, args.max_items) == (0.5, 250)
    assert (default.checkpoint_interval, default.max_items) == (0.0, 100)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-items", "0"], "--max-items: must be greater than 0, not 0"),
        (["--poll-interval", "-1"], "--poll-interval: must be greater than 0, not -1"),
        (["--checkpoint-interval", "-0.5"], "--checkpoint-interval: must be 0 or more"),
        (["--lease-duration", "soon"], "--lease-duration: not a number: 'soon'"),
        (
            ["--lease-duration", "10", "--renew-interval", "10"],
            "--renew-interval must be shorter than --lease-duration",
        ),
        (["--log-level", "LOUD"], "--log-level: must be one of CRITICAL, ERROR, WARNING"),
        (["--duration", "-5"], "--duration: must be greater than 0, not -5"),
        (["--duration", "nan"], "--duration: must be a finite number, not nan"),
        (["--duration", "inf"], "--duration: must be a finite number, not inf"),
        (["--lease-duration", "1e300"], "--lease-duration: must be at most 1000000"),
        (["--handler-timeout", "0"], "--handler-timeout: must be greater than 0"),
        (["--shutdown-timeout=-inf"], "--shutdown-timeout: must be a finite number"),
        (["--max-items", "2.5"], "--max-items: not a number: '2.5'"),
    ],
)
def test_parse_args_bad_value_exits_2_with_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_parse_args_log_level_any_case_and_deadline_options_parsed() -> None:
    args = parse_args(
        ["--log-level", "debug", "--handler-timeout", "20", "--shutdown-timeout", "5"]
    )
    default = parse_args([])

    assert (args.log_level, args.handler_timeout, args.shutdown_timeout) == ("DEBUG", 20.0, 5.0)
    assert (default.handler_timeout, default.shutdown_timeout) == (45.0, 25.0)
    assert default.handler_timeout < default.lease_duration


def test_run_main_sets_the_relay_process_switch_interval_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = sys.getswitchinterval()
    monkeypatch.setenv(TELEMETRY, "no-such-exporter")  # the run stops at its first setting
    try:
        sys.setswitchinterval(0.005)
        code = run_main([])
        tuned = sys.getswitchinterval()
    finally:
        sys.setswitchinterval(previous)

    assert code == 2
    assert "no-such-exporter" in capsys.readouterr().err
    assert tuned == pytest.approx(SWITCH_INTERVAL_SECONDS)
    assert SWITCH_INTERVAL_SECONDS < 0.005
