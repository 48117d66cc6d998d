"""Shared fixtures: the local dev-stack servers are started once per test session."""

pytest_plugins = [
    "tests.fixtures.cosmos",
    "tests.fixtures.servicebus",
    "tests.fixtures.blackhole",
    "tests.fixtures.telemetry",
]
