"""A small read-only view of the Bicep files through tree-sitter-bicep, for the infra tests.

Only what the tests ask: declarations (resources, modules, variables, params) with their loop
(``for x in <iterable>``), and the properties of object literals. Values are source text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


@cache
def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def bicep_files() -> tuple[Path, ...]:
    return tuple(sorted(INFRA.rglob("*.bicep")))


def parse(source: bytes) -> tree_sitter.Tree:
    return parser().parse(source)


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_problems(source: bytes) -> list[str]:
    """Every ERROR or MISSING node, as 'line:col type'."""
    return [
        f"{n.start_point[0] + 1}:{n.start_point[1] + 1} {'MISSING' if n.is_missing else n.type}"
        for n in walk(parse(source).root_node)
        if n.is_error or n.is_missing
    ]


def text(node: tree_sitter.Node | None) -> str:
    return "" if node is None or node.text is None else node.text.decode("utf-8")


@dataclass(frozen=True)
class Loop:
    variable: str
    iterable: str


@dataclass(frozen=True)
class Declaration:
    kind: str  # resource, module, variable, parameter, output
    symbol: str
    type: str  # resource type@api or module path; "" otherwise
    loop: Loop | None
    body: tree_sitter.Node | None  # the object literal, if any
    existing: bool = False  # `resource x '...' existing = {...}`: a reference, not a declaration
    value: tree_sitter.Node | None = None  # the expression after `=`


def _loop(node: tree_sitter.Node) -> tuple[Loop | None, tree_sitter.Node | None]:
    """The loop of a declaration (``for x in it`` or ``for (x, i) in it``) and its body."""
    loop = next((c for c in node.children if c.type == "for_statement"), None)
    if loop is None:
        return None, None
    variable = ""
    iterable = ""
    after_in = False
    for child in loop.children:
        if child.type == "for_loop_parameters":
            variable = text(next(c for c in child.children if c.type == "loop_variable"))
        elif child.type in ("identifier", "loop_variable") and not after_in:
            variable = text(child)
        elif child.type == "in":
            after_in = True
        elif after_in and child.is_named and not iterable:
            iterable = text(child)
    return Loop(variable, iterable), _body(loop)


def _body(node: tree_sitter.Node) -> tree_sitter.Node | None:
    """The object literal of a declaration, looking through ``if (...)`` and ``for``."""
    for child in node.children:
        if child.type == "object":
            return child
        if child.type in ("if_statement", "for_statement"):
            return _body(child)
    return None


def declarations(path: Path) -> list[Declaration]:
    root = parse(path.read_bytes()).root_node
    found: list[Declaration] = []
    kinds = {
        "resource_declaration": "resource",
        "module_declaration": "module",
        "variable_declaration": "variable",
        "parameter_declaration": "parameter",
        "output_declaration": "output",
    }
    for node in root.children:
        kind = kinds.get(node.type)
        if kind is None:
            continue
        symbol = next((text(c) for c in node.children if c.type == "identifier"), "")
        type_node = next((c for c in node.children if c.type == "string"), None)
        loop, body = _loop(node)
        if body is None:
            body = _body(node)
        resource_type = text(type_node).strip("'") if kind in ("resource", "module") else ""
        existing = any(c.type == "existing" for c in node.children)
        value = [c for c in node.children if c.is_named][-1]
        found.append(Declaration(kind, symbol, resource_type, loop, body, existing, value))
    return found


def properties(obj: tree_sitter.Node | None) -> dict[str, tree_sitter.Node]:
    """The direct properties of an object literal: key -> value node."""
    result: dict[str, tree_sitter.Node] = {}
    if obj is None:
        return result
    for prop in obj.children:
        if prop.type != "object_property":
            continue
        named = [c for c in prop.children if c.is_named]
        if len(named) >= 2:
            result[text(named[0]).strip("'")] = named[-1]
    return result


def string_literals(source: bytes) -> list[str]:
    """Every plain string literal (no interpolation) in a Bicep source."""
    root = parse(source).root_node
    found = []
    for node in walk(root):
        if node.type == "string" and not any(c.type == "interpolation" for c in node.children):
            found.append(text(node)[1:-1])
    return found


def code(source: bytes) -> str:
    """A Bicep source with its comments blanked out (same length): what Bicep evaluates."""
    blanked = bytearray(source)
    for node in walk(parse(source).root_node):
        if node.type in ("comment", "diagnostic_comment"):
            blanked[node.start_byte : node.end_byte] = b" " * (node.end_byte - node.start_byte)
    return blanked.decode("utf-8")
