"""The relay host's command line, without servers."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from events.changefeed.host import build_parser, parse_start_from


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
