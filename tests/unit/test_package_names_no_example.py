"""No module of the package outside the declaration loader names the example domain.

The example (``infra/topology.json``, the contracts in ``events/deployment/contracts/``) is one
deployment's data: its monitored containers, their settings, feed functions and lease prefixes,
and the event types and contracts of the default registry. Code that names one of them would
break (or silently skip) a deployment that declares other feeds. Only the example contracts,
their registration, the example consumer's handler and the declaration loader may name them.

What counts: string constants that are not docstrings, and identifiers (names, attributes,
definitions, arguments, keywords, imports). A value names an example name when it equals it or
holds it as a word: both are split into words at non-alphanumerics and camelCase humps
(``RELAY_ORDERS_CONTAINER`` holds ``orders``; ``OrderPlacedV1`` holds ``OrderPlaced``).

Generic vocabulary is allowed: container roles (``leases``, ``quarantine``, ``inbox``) and
source kinds (``outbox``, ``cdc``, ``eventstore``). The example's ``eventstore`` container
shares its name with the source kind, so that bare word cannot be told apart and is allowed;
that container's setting, function and lease prefix are not.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from events.deployment.contracts import default_registry
from events.deployment.topology import SOURCE_KINDS, ContainerRole, load_topology

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "events"

#: The example contracts, their registration, the example consumer's handler, and the loader
#: of the declaration file.
EXCLUDED = frozenset(
    {
        "events/deployment/handlers/order_status.py",
        "events/deployment/contracts/orders.py",
        "events/deployment/contracts/payments.py",
        "events/deployment/contracts/__init__.py",
        "events/deployment/topology.py",
    }
)
GENERIC = frozenset(get_args(ContainerRole)) | frozenset(SOURCE_KINDS)


def example_names() -> dict[str, str]:
    """Example name -> what it is, from the shipped declaration and the default registry."""
    topology = load_topology()
    names: dict[str, str] = {}
    for container in topology.cosmos.containers:
        names[container.setting] = f"setting of container {container.name!r}"
    for container, feed in topology.monitored():
        names[container.name] = "monitored container"
        names[feed.function] = "feed function"
        names[feed.lease_prefix] = "lease prefix"
    for contract in default_registry():
        names[contract.event_type] = "event type"
        names[contract.__name__] = "contract"
    return {name: what for name, what in names.items() if name.lower() not in GENERIC}


def _words(value: str) -> tuple[str, ...]:
    humps = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", value)
    return tuple(word.lower() for word in re.split(r"[^A-Za-z0-9]+", humps) if word)


def _holds(value: tuple[str, ...], name: tuple[str, ...]) -> bool:
    return any(value[i : i + len(name)] == name for i in range(len(value) - len(name) + 1))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(id(first.value))
    return found


def _values(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, text) of every identifier and non-docstring string constant."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield line, node.value
        elif isinstance(node, ast.Name):
            yield line, node.id
        elif isinstance(node, ast.Attribute):
            yield line, node.attr
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield line, node.name
        elif isinstance(node, ast.arg | ast.keyword) and node.arg is not None:
            yield line, node.arg
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            yield line, node.module
        elif isinstance(node, ast.alias):
            yield line, node.name
            if node.asname is not None:
                yield line, node.asname


@dataclass(frozen=True, order=True)
class Finding:
    where: str
    line: int
    value: str
    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.value!r} names {self.name!r} ({self.what})"


def findings(source: str, where: str, names: Mapping[str, str]) -> list[Finding]:
    """Every example name a module's code names, with its line and the naming value."""
    split = {name: _words(name) for name in names}
    found = set()
    for line, value in _values(ast.parse(source)):
        words = _words(value)
        for name, name_words in split.items():
            if _holds(words, name_words):
                found.add(Finding(where, line, value, name, names[name]))
    return sorted(found)


def test_example_names_come_from_the_declaration_and_the_default_registry() -> None:
    names = example_names()

    assert {"orders", "RELAY_ORDERS_CONTAINER", "relay_orders", "relay-orders."} <= set(names)
    assert {"RELAY_EVENTSTORE_CONTAINER", "relay_eventstore", "relay-eventstore."} <= set(names)
    assert {"RELAY_LEASES_CONTAINER", "RELAY_QUARANTINE_CONTAINER"} <= set(names)
    assert {"OrderPlaced", "OrderUpsertedV1", "PaymentCaptured"} <= set(names)
    assert GENERIC & {name.lower() for name in names} == set()


def test_name_scan_with_planted_names_reports_code_but_not_docstrings_or_roles() -> None:
    source = '''"""Reads orders from RELAY_ORDERS_CONTAINER."""
from events.deployment.contracts.orders import OrderPlacedV1
ORDERS_CONTAINER = "RELAY_ORDERS_CONTAINER"


def relay(feed: str = "relay-orders.") -> str:
    """The relay_orders feed."""
    return f"{feed} EventStore leases quarantine inbox outbox"
'''

    found = findings(source, "m.py", example_names())

    assert {(f.line, f.value, f.name) for f in found} == {
        (2, "events.deployment.contracts.orders", "orders"),
        (2, "OrderPlacedV1", "OrderPlaced"),
        (2, "OrderPlacedV1", "OrderPlacedV1"),
        (3, "ORDERS_CONTAINER", "orders"),
        (3, "RELAY_ORDERS_CONTAINER", "orders"),
        (3, "RELAY_ORDERS_CONTAINER", "RELAY_ORDERS_CONTAINER"),
        (3, "RELAY_ORDERS_CONTAINER", "relay-orders."),  # the words relay, orders
        (3, "RELAY_ORDERS_CONTAINER", "relay_orders"),
        (6, "relay-orders.", "orders"),
        (6, "relay-orders.", "relay-orders."),
        (6, "relay-orders.", "relay_orders"),
    }


def test_package_modules_outside_the_declaration_loader_name_nothing_of_the_example() -> None:
    names = example_names()
    scanned = [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(REPO).as_posix() not in EXCLUDED
    ]

    found = [
        str(finding)
        for path in scanned
        for finding in findings(
            path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix(), names
        )
    ]

    assert len(scanned) > 30
    assert found == []
