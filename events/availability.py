"""One WARNING when something becomes unavailable, one INFO when it is back: per state change.

A silent broker or database fails every retry of every batch; logging each failure would bury
the one line an operator needs. ``AvailabilityLog`` remembers, per key (an endpoint, an entity,
a lease, a feed), whether the last outcome failed, and logs only transitions. The message
names the key in its text, so a default log format shows what to act on.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["AvailabilityLog"]


class AvailabilityLog:
    """Thread-safe transition logger: ``down`` logs once until ``up`` is called for the key."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()

    def down(self, key: str, reason: str, *, level: int = logging.WARNING) -> bool:
        """Record a failure of ``key``; logs ``<key> unavailable: <reason>`` on the first one.

        Returns True when this call logged (the state changed)."""
        with self._lock:
            if key in self._down:
                return False
            self._down[key] = reason
        self._logger.log(level, "%s unavailable: %s", key, reason, extra={"subject": key})
        return True

    def up(self, key: str) -> bool:
        """Record a success of ``key``; logs ``<key> available again`` after a failure."""
        if key not in self._down:  # the common case, without the lock
            return False
        with self._lock:
            reason = self._down.pop(key, None)
        if reason is None:
            return False
        self._logger.info("%s available again", key, extra={"subject": key})
        return True

    def is_down(self, key: str) -> bool:
        with self._lock:
            return key in self._down
