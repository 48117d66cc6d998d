"""When the demo stops waiting for the consumer after the writer stopped.

A fixed deadline reports events as lost that are merely late (a consumer behind by a few
minutes is not losing anything). The rule instead keeps waiting while events keep arriving and
gives up only after ``idle_seconds`` without a new one, or at ``limit_seconds`` in all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

__all__ = ["DrainRule", "DrainVerdict"]


class DrainVerdict(Enum):
    WAIT = "wait"  # something is missing and events still arrive: keep waiting
    DONE = "done"  # nothing is missing
    STALLED = "stalled"  # something is missing and nothing arrived for idle_seconds
    LIMIT = "limit"  # something is missing and the hard limit is reached


class DrainRule:
    """Decides, from what arrived so far, whether to keep waiting. The clock is injected."""

    def __init__(
        self,
        idle_seconds: float,
        limit_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_seconds <= 0 or limit_seconds <= 0:
            raise ValueError("idle_seconds and limit_seconds must be positive")
        self.idle_seconds = idle_seconds
        self.limit_seconds = limit_seconds
        self._clock = clock
        self._started = clock()
        self._progress_at = self._started
        self._arrived: int | None = None

    def observe(self, arrived: int, missing: int) -> DrainVerdict:
        """``arrived``: a count that grows with every event received; ``missing``: still due."""
        now = self._clock()
        if self._arrived is None or arrived > self._arrived:
            if self._arrived is not None:
                self._progress_at = now
            self._arrived = arrived
        if missing <= 0:
            return DrainVerdict.DONE
        if now - self._started >= self.limit_seconds:
            return DrainVerdict.LIMIT
        if now - self._progress_at >= self.idle_seconds:
            return DrainVerdict.STALLED
        return DrainVerdict.WAIT

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    @property
    def idle(self) -> float:
        """Seconds since the last new event (or since the drain began)."""
        return self._clock() - self._progress_at
