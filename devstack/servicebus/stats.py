"""Counters the broker keeps for tests and benchmarks, read as immutable snapshots."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["BrokerStats", "StatsRecorder"]


def _frozen(counter: Counter[str]) -> Mapping[str, int]:
    return MappingProxyType(dict(counter))


@dataclass(frozen=True)
class BrokerStats:
    """A snapshot of the broker's counters; every mapping is keyed by entity name.

    - ``transfers``: AMQP transfers received per topic/queue (a batch is one transfer; refused,
      busy and dropped transfers count too).
    - ``messages``: messages accepted into a topic/queue (after duplicate detection).
    - ``duplicates``: messages dropped by duplicate detection per topic/queue.
    - ``rejected``: transfers refused per topic/queue (size, missing session id, server busy).
    - ``dead_lettered``: messages moved to a dead-letter queue, keyed by the queue or
      ``<topic>/Subscriptions/<name>`` path that lost them.
    - ``connections``: connections accepted since start; ``dropped_connections``: closed by the
      drop fault.
    """

    transfers: Mapping[str, int] = field(default_factory=dict)
    messages: Mapping[str, int] = field(default_factory=dict)
    duplicates: Mapping[str, int] = field(default_factory=dict)
    rejected: Mapping[str, int] = field(default_factory=dict)
    dead_lettered: Mapping[str, int] = field(default_factory=dict)
    connections: int = 0
    dropped_connections: int = 0


class StatsRecorder:
    """The broker-side, thread-safe counters behind :class:`BrokerStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: Counter[str] = Counter()
        self._messages: Counter[str] = Counter()
        self._duplicates: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._dead_lettered: Counter[str] = Counter()
        self._connections = 0
        self._dropped = 0

    def transfer(self, entity: str) -> None:
        with self._lock:
            self._transfers[entity] += 1

    def accepted(self, entity: str, messages: int, duplicates: int) -> None:
        with self._lock:
            self._messages[entity] += messages
            if duplicates:
                self._duplicates[entity] += duplicates

    def rejected(self, entity: str) -> None:
        with self._lock:
            self._rejected[entity] += 1

    def dead_lettered(self, path: str) -> None:
        with self._lock:
            self._dead_lettered[path] += 1

    def connection(self) -> None:
        with self._lock:
            self._connections += 1

    def dropped_connection(self) -> None:
        with self._lock:
            self._dropped += 1

    def snapshot(self) -> BrokerStats:
        with self._lock:
            return BrokerStats(
                transfers=_frozen(self._transfers),
                messages=_frozen(self._messages),
                duplicates=_frozen(self._duplicates),
                rejected=_frozen(self._rejected),
                dead_lettered=_frozen(self._dead_lettered),
                connections=self._connections,
                dropped_connections=self._dropped,
            )
