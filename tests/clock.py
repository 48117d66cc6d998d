"""A clock that moves only when a test moves it; safe to read from the threads under test."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta


class ManualClock:
    """Callable like ``datetime.now(UTC)``; ``advance`` (or setting ``now``) moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)
