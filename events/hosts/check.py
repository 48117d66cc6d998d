"""``python -m events check [--offline]``: validate a deployment against every rule.

One line per rule, ``PASS <rule>: why`` or ``FAIL <rule>: why``; exit status 1 when any rule
fails, 2 when the settings (online) cannot be read.

Rules on the declaration alone (``--offline`` checks only these):

- ``declaration``: the file loads (shape, feeds, contracts), as the app loads it at start-up.
- ``duplicate-detection``: every queue and topic detects duplicates (the relay retries sends,
  and event ids are deterministic: detection turns a retry into a no-op).
- ``dedup-window``: each window is longer than the longest delay between two attempts at one
  batch: the Functions retry policy's maximum interval and the processor's backoff maximum.
  A retry after the window would be a duplicate the consumer sees.
- ``outbox-ttl``: outbox documents live longer than the longest window (a replay within the
  TTL is still deduplicated; an outbox that expires first cannot be replayed at all).
- ``lease-partition-key``: the lease container is partitioned on ``/id`` (required by the
  Functions trigger and by this package's lease store).
- ``lease-prefixes``: every feed has its own lease prefix, and none is the start of another
  (leases are listed by prefix: one would read the other's leases).
- ``sessions``: every queue and subscription that receives events requires sessions (order
  per aggregate); a subscription whose single rule admits one event type (a correlation
  filter on the subject) is accepted without, and the line says so.
- ``routes``: the default destination and every route name a declared queue or topic.
- ``consumers``: each declared consumer's subscription exists and requires sessions, its
  container is declared with role ``consumer``, and its handler imports and is a function.

Online (the default), with the app's settings, also:

- ``cosmos-containers``: the database exists, and each declared container (its name in use)
  exists with the declared partition key.
- ``service-bus-entities``: a sender opens on every destination within the deadline (the
  local broker, like Service Bus, refuses an unknown entity).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from events.deployment.catalog import load_deployment, resolve_handler
from events.deployment.settings import Settings, load_settings
from events.deployment.topology import (
    DEFAULT_TOPOLOGY,
    CorrelationFilter,
    QueueSpec,
    SubscriptionSpec,
    Topology,
    iso_duration_seconds,
)
from events.errors import RelayError, SettingsError, TransientError

__all__ = ["RuleResult", "check_declaration", "check_online", "longest_retry_delay", "main"]

_PROG = "python -m events check"


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    why: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.rule}: {self.why}"


class _Unchecked(Topology):
    """The declaration's fields, without the cross-field checks the loader refuses a file for:
    here each of them is a rule with its own line."""

    def model_post_init(self, __context: object) -> None:
        return None


def _seconds(hh_mm_ss: str) -> int:
    hours, minutes, seconds = (int(part) for part in hh_mm_ss.split(":"))
    return (hours * 60 + minutes) * 60 + seconds


def longest_retry_delay() -> tuple[int, str]:
    """The longest wait between two attempts at one batch, in seconds, and where it comes from."""
    # Imported here: the Functions host module is the only one that loads azure.functions.
    from events.changefeed.processor import Backoff  # noqa: PLC0415
    from events.hosts.functions import RETRY_MAXIMUM_INTERVAL  # noqa: PLC0415

    functions = _seconds(RETRY_MAXIMUM_INTERVAL)
    processor = int(Backoff().maximum)
    if functions >= processor:
        return functions, f"the Functions retry maximum interval {RETRY_MAXIMUM_INTERVAL}"
    return processor, f"the processor's backoff maximum {processor} s"


def _entities(topology: Topology) -> list[tuple[str, str, int, bool]]:
    """(kind, name, window seconds, detection on) of every queue and topic."""
    bus = topology.service_bus
    return [
        (kind, e.name, iso_duration_seconds(e.duplicate_detection_history_time_window), on)
        for kind, e, on in [
            *(("topic", t, t.requires_duplicate_detection) for t in bus.topics),
            *(("queue", q, q.requires_duplicate_detection) for q in bus.queues),
        ]
    ]


def _rule(name: str, failures: list[str], passed: str) -> RuleResult:
    return RuleResult(name, not failures, "; ".join(failures) if failures else passed)


def _duplicate_detection(topology: Topology) -> RuleResult:
    entities = _entities(topology)
    off = [
        f"{kind} {name} has requiresDuplicateDetection false: a retried send is delivered twice"
        for kind, name, _, on in entities
        if not on
    ]
    return _rule(
        "duplicate-detection",
        off,
        f"on for every queue and topic ({', '.join(n for _, n, _, _ in entities)})",
    )


def _dedup_window(topology: Topology, retry: tuple[int, str]) -> RuleResult:
    delay, source = retry
    short = [
        f"{kind} {name} window {window} s is not longer than the longest retry delay {delay} s "
        f"({source}): a retry after the window is delivered twice"
        for kind, name, window, _ in _entities(topology)
        if window <= delay
    ]
    windows = ", ".join(f"{name} {window} s" for _, name, window, _ in _entities(topology))
    return _rule("dedup-window", short, f"{windows} > {delay} s ({source})")


def _outbox_ttl(topology: Topology) -> RuleResult:
    ttl = topology.cosmos.outbox_ttl_seconds
    longest = max((window for _, _, window, _ in _entities(topology)), default=0)
    failures = (
        []
        if ttl > longest
        else [f"outboxTtlSeconds {ttl} s is not longer than the longest dedup window {longest} s"]
    )
    return _rule("outbox-ttl", failures, f"outboxTtlSeconds {ttl} s > dedup window {longest} s")


def _lease_partition_key(topology: Topology) -> RuleResult:
    leases = topology.cosmos.by_role("leases")
    if len(leases) != 1:
        return RuleResult(
            "lease-partition-key", False, f"{len(leases)} lease containers declared, need 1"
        )
    key = leases[0].partition_key
    failures = (
        []
        if key == "/id"
        else [
            f"lease container {leases[0].name} is partitioned on {key}, the change feed "
            "processors need /id"
        ]
    )
    return _rule("lease-partition-key", failures, f"lease container {leases[0].name} on /id")


def _lease_prefixes(topology: Topology) -> RuleResult:
    feeds = [(c.name, c.feed.lease_prefix) for c in topology.cosmos.containers if c.feed]
    failures = []
    for index, (container, prefix) in enumerate(feeds):
        for other, other_prefix in feeds[index + 1 :]:
            if prefix == other_prefix:
                failures.append(f"feeds of {container} and {other} share prefix {prefix!r}")
            elif prefix.startswith(other_prefix) or other_prefix.startswith(prefix):
                failures.append(
                    f"prefix {prefix!r} ({container}) and {other_prefix!r} ({other}): one starts "
                    "the other, so one feed lists the other's leases"
                )
    return _rule(
        "lease-prefixes", failures, f"unique: {', '.join(repr(p) for _, p in feeds) or 'no feeds'}"
    )


def _single_type(subscription: SubscriptionSpec) -> str | None:
    """The one event type a subscription admits, if its rules say so."""
    if len(subscription.rules) != 1:
        return None
    rule_filter = subscription.rules[0].filter
    if isinstance(rule_filter, CorrelationFilter) and rule_filter.subject:
        return rule_filter.subject
    return None


def _sessions(topology: Topology) -> RuleResult:
    bus = topology.service_bus
    receivers: list[tuple[str, QueueSpec | SubscriptionSpec]] = [
        (f"queue {q.name}", q) for q in bus.queues
    ]
    receivers += [
        (f"subscription {t.name}/{s.name}", s) for t in bus.topics for s in t.subscriptions
    ]
    failures, accepted, ordered = [], [], []
    for label, receiver in receivers:
        if receiver.requires_session:
            ordered.append(label)
            continue
        single = _single_type(receiver) if isinstance(receiver, SubscriptionSpec) else None
        if single is None:
            failures.append(
                f"{label} does not require sessions: events of one aggregate may arrive out of "
                "order (set requiresSession, or filter it to one event type)"
            )
        else:
            accepted.append(f"{label} without sessions takes one event type ({single})")
    why = f"sessions on {', '.join(ordered) or 'nothing'}"
    if accepted:
        why += "; accepted: " + "; ".join(accepted)
    return _rule("sessions", failures, why)


def _routes(topology: Topology) -> RuleResult:
    bus = topology.service_bus
    entities = bus.entity_names()
    routes = {"(default)": bus.default_destination, **bus.routes}
    failures = [
        f"{event} -> {destination} is not a declared queue or topic"
        for event, destination in routes.items()
        if destination not in entities
    ]
    return _rule(
        "routes",
        failures,
        ", ".join(f"{event} -> {destination}" for event, destination in routes.items()),
    )


def _consumers(topology: Topology) -> RuleResult:
    bus = topology.service_bus
    roles = {c.name: c.role for c in topology.cosmos.containers}
    failures, passed = [], []
    for consumer in bus.consumers:
        where = f"{consumer.name} ({consumer.topic}/{consumer.subscription})"
        subscription = bus.subscription(consumer.topic, consumer.subscription)
        problems = []
        if subscription is None:
            problems.append("no such subscription is declared")
        elif not subscription.requires_session:
            problems.append("the subscription does not require sessions")
        if roles.get(consumer.container) != "consumer":
            problems.append(f"container {consumer.container} is not declared with role consumer")
        try:
            resolve_handler(consumer.handler)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            failures.append(f"{where}: {'; '.join(problems)}")
        else:
            passed.append(f"{where} sessions, handler {consumer.handler}")
    return _rule("consumers", failures, ", ".join(passed) or "none declared")


def check_declaration(
    path: Path, retry: tuple[int, str] | None = None
) -> tuple[list[RuleResult], Topology | None]:
    """Every rule on the declaration alone; the topology when the file loads as the app
    loads it (needed by the online rules)."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        unchecked = _Unchecked.model_validate(raw)
    except (OSError, ValueError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        return [RuleResult("declaration", False, f"{path.name} cannot be read: {reason}")], None
    topology: Topology | None = None
    try:
        topology = load_deployment(path).topology
    except SettingsError as exc:
        declaration = RuleResult("declaration", False, str(exc))
    else:
        declaration = RuleResult("declaration", True, f"{path.name} loads, feeds and contracts")
    rules: list[Callable[[Topology], RuleResult]] = [
        _duplicate_detection,
        lambda t: _dedup_window(t, retry or longest_retry_delay()),
        _outbox_ttl,
        _lease_partition_key,
        _lease_prefixes,
        _sessions,
        _routes,
        _consumers,
    ]
    return [declaration, *(rule(unchecked) for rule in rules)], topology


def check_online(
    environ: Mapping[str, str], topology: Topology, *, verify_tls: bool
) -> list[RuleResult]:
    """What exists in Cosmos DB and on Service Bus (see the module docstring). SettingsError
    when the settings cannot be read."""
    # Adapters are imported here so that importing the host stays cheap.
    from events.adapters import servicebus  # noqa: PLC0415
    from events.adapters.cosmos.client import cosmos_client  # noqa: PLC0415
    from events.adapters.cosmos.provision import existing_containers  # noqa: PLC0415

    settings = load_settings(environ, topology)
    results = []
    try:
        client = cosmos_client(
            settings.cosmos, verify_tls=verify_tls, timeout=settings.cosmos_timeout
        )
        declared = {settings.container(c.name): c.partition_key for c in topology.cosmos.containers}
        found = existing_containers(client.get_database_client(settings.database), list(declared))
    except RelayError as exc:
        results.append(RuleResult("cosmos-containers", False, str(exc)))
    else:
        results.append(_containers(settings, declared, found))
    publisher = servicebus.ServiceBusPublisher(
        servicebus.service_bus_client(settings.service_bus),
        timeout=settings.servicebus_timeout,
        endpoint=servicebus.endpoint_of(settings.service_bus),
        setting=settings.service_bus.setting,
    )
    try:
        results.append(_entities_reachable(publisher.probe, settings.destinations))
    finally:
        publisher.close()
    return results


def _containers(
    settings: Settings, declared: Mapping[str, str], found: Mapping[str, tuple[str, ...] | None]
) -> RuleResult:
    failures = []
    for name, key in declared.items():
        paths = found.get(name)
        if paths is None:
            failures.append(f"container {name} does not exist (python -m events provision)")
        elif list(paths) != [key]:
            failures.append(f"container {name} is partitioned on {', '.join(paths)}, not {key}")
    return _rule(
        "cosmos-containers",
        failures,
        f"database {settings.database}: "
        + ", ".join(f"{name} {key}" for name, key in declared.items()),
    )


def _entities_reachable(probe: Callable[[str], None], destinations: list[str]) -> RuleResult:
    failures = []
    for destination in destinations:
        try:
            probe(destination)
        except (SettingsError, TransientError) as exc:
            failures.append(f"{destination}: {exc}")
    return _rule("service-bus-entities", failures, f"a sender opens on {', '.join(destinations)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Validate a deployment against every rule, one line per rule "
        "(PASS/FAIL and why); exit status 1 when any rule fails.",
    )
    parser.add_argument(
        "--offline", action="store_true", help="check the declaration alone (no network)"
    )
    parser.add_argument(
        "--declaration",
        type=Path,
        default=DEFAULT_TOPOLOGY,
        help="topology file (default: the one shipped with the app, infra/topology.json)",
    )
    parser.add_argument(
        "--insecure-local",
        action="store_true",
        help="do not verify TLS (a loopback dev server with a self-signed certificate)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    results, topology = check_declaration(args.declaration)
    if not args.offline:
        if args.insecure_local:
            from events.adapters.cosmos.client import (  # noqa: PLC0415
                quiet_loopback_tls_warnings,
            )

            quiet_loopback_tls_warnings()
        if topology is None:
            results.append(
                RuleResult("online", False, "not checked: the declaration does not load")
            )
        else:
            try:
                results += check_online(os.environ, topology, verify_tls=not args.insecure_local)
            except SettingsError as exc:
                for result in results:
                    print(result.line())
                print(f"{_PROG}: {exc}", file=sys.stderr)
                return 2
    for result in results:
        print(result.line(), flush=True)
    failed = sum(not r.passed for r in results)
    print(f"{len(results)} rules: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0
