"""Subscription rules: correlation filters, and the small subset of SQL filters emulated.

SQL filters understood: ``1=1`` / ``TRUE`` (everything), ``1=0`` / ``FALSE`` (nothing), and
equalities joined by ``AND`` between a system property (``sys.Label``, ``sys.MessageId``,
``sys.CorrelationId``, ``sys.ContentType``, ``sys.SessionId``, ``sys.To``, ``sys.ReplyTo``) or
an application property (``user.name``, ``name`` or ``[name]``) and a quoted string or a number.
Anything else is refused when the broker starts, so a test never silently routes differently
from Service Bus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from events.deployment.topology import CorrelationFilter, RuleSpec, SqlFilter

from .errors import UnsupportedTopologyError
from .messages import MessageFacts

__all__ = ["Predicate", "compile_rules"]

Predicate = Callable[[MessageFacts], bool]

_SYSTEM: dict[str, Callable[[MessageFacts], object]] = {
    "label": lambda f: f.subject,
    "subject": lambda f: f.subject,
    "messageid": lambda f: f.message_id,
    "correlationid": lambda f: f.correlation_id,
    "contenttype": lambda f: f.content_type,
    "sessionid": lambda f: f.session_id,
    "to": lambda f: f.to,
    "replyto": lambda f: f.reply_to,
}

_TRUE = re.compile(r"^\s*(?:1\s*=\s*1|true)\s*$", re.IGNORECASE)
_FALSE = re.compile(r"^\s*(?:1\s*=\s*0|false)\s*$", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_EQUALITY = re.compile(
    r"""^\s*(?P<name>(?:sys\.|user\.)?(?:\[[^\]]+\]|[A-Za-z_][\w:\-]*))\s*=\s*
        (?P<value>'(?:[^']|'')*'|-?\d+(?:\.\d+)?)\s*$""",
    re.VERBOSE,
)


def _values_equal(actual: object, expected: object) -> bool:
    if actual is None:
        return False
    if actual == expected:
        return True
    return isinstance(expected, str) and not isinstance(actual, bool) and str(actual) == expected


def _correlation(spec: CorrelationFilter) -> Predicate:
    wanted: list[tuple[Callable[[MessageFacts], object], object]] = []
    for getter, value in (
        (_SYSTEM["subject"], spec.subject),
        (_SYSTEM["correlationid"], spec.correlation_id),
        (_SYSTEM["contenttype"], spec.content_type),
        (_SYSTEM["sessionid"], spec.session_id),
    ):
        if value is not None:
            wanted.append((getter, value))
    for name, value in spec.properties.items():
        wanted.append((lambda f, n=name: f.properties.get(n), value))  # type: ignore[misc]
    return lambda facts: all(_values_equal(get(facts), value) for get, value in wanted)


@dataclass(frozen=True)
class _Equality:
    getter: Callable[[MessageFacts], object]
    value: object

    def __call__(self, facts: MessageFacts) -> bool:
        return _values_equal(self.getter(facts), self.value)


def _literal(text: str) -> object:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return float(text) if "." in text else int(text)


def _sql(rule: str, spec: SqlFilter) -> Predicate:
    expression = spec.expression
    if _TRUE.match(expression):
        return lambda _facts: True
    if _FALSE.match(expression):
        return lambda _facts: False
    terms: list[_Equality] = []
    for part in _AND.split(expression.strip()):
        match = _EQUALITY.match(part)
        if match is None:
            raise UnsupportedTopologyError(
                f"rule {rule!r}: SQL filter {expression!r} is not supported by the local broker "
                "(only 1=1, 1=0 and equalities joined by AND)"
            )
        name = match["name"]
        value = _literal(match["value"])
        if name.lower().startswith("sys."):
            key = name[4:].lower()
            if key not in _SYSTEM:
                raise UnsupportedTopologyError(
                    f"rule {rule!r}: system property {name!r} is not supported by the local broker"
                )
            terms.append(_Equality(_SYSTEM[key], value))
        else:
            prop = name[5:] if name.lower().startswith("user.") else name
            prop = prop.strip("[]")
            terms.append(_Equality(lambda f, p=prop: f.properties.get(p), value))  # type: ignore[misc]
    return lambda facts: all(term(facts) for term in terms)


def compile_rules(rules: Sequence[RuleSpec]) -> Predicate:
    """One predicate for a subscription: no rules means everything; otherwise any rule matches."""
    if not rules:
        return lambda _facts: True
    predicates: list[Predicate] = []
    for rule in rules:
        if isinstance(rule.filter, CorrelationFilter):
            predicates.append(_correlation(rule.filter))
        else:
            predicates.append(_sql(rule.name, rule.filter))
    return lambda facts: any(predicate(facts) for predicate in predicates)
