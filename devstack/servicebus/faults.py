"""Faults a test can inject into the local broker, before start or while it runs.

All methods are thread-safe: the broker's reactor thread consumes the faults while the test
thread sets them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum

__all__ = ["Faults", "TransferFault"]


class TransferFault(Enum):
    """What the broker does with one incoming transfer."""

    NONE = "none"
    DROP_CONNECTION = "drop-connection"
    SERVER_BUSY = "server-busy"


@dataclass(frozen=True)
class _Decision:
    fault: TransferFault
    delay_seconds: float


class Faults:
    """Fault switches for incoming transfers (sends).

    - ``drop_connection_after(n)``: the next ``n`` transfers are handled normally, the one after
      closes the socket abruptly (no AMQP close frame) and is not enqueued. One-shot.
    - ``server_busy(n)``: the next ``n`` transfers are refused with ``com.microsoft:server-busy``.
    - ``delay_transfers(seconds)``: every transfer is settled that much later (the reactor keeps
      serving other connections meanwhile).
    """

    def __init__(
        self,
        *,
        drop_connection_after: int | None = None,
        server_busy: int = 0,
        transfer_delay: float = 0.0,
    ) -> None:
        self._lock = threading.Lock()
        self._drop_after: int | None = None
        self._busy = 0
        self._delay = 0.0
        if drop_connection_after is not None:
            self.drop_connection_after(drop_connection_after)
        self.server_busy(server_busy)
        self.delay_transfers(transfer_delay)

    def drop_connection_after(self, transfers: int | None) -> None:
        """Drop the connection on the transfer after ``transfers`` more; None disarms it."""
        if transfers is not None and transfers < 0:
            raise ValueError("transfers must be >= 0")
        with self._lock:
            self._drop_after = transfers

    def server_busy(self, transfers: int) -> None:
        """Refuse the next ``transfers`` transfers as server-busy (0 disarms it)."""
        if transfers < 0:
            raise ValueError("transfers must be >= 0")
        with self._lock:
            self._busy = transfers

    def delay_transfers(self, seconds: float) -> None:
        """Settle every transfer ``seconds`` late (0 disarms it)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._delay = seconds

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._drop_after = None
            self._busy = 0
            self._delay = 0.0

    @property
    def transfer_delay(self) -> float:
        with self._lock:
            return self._delay

    def take(self) -> _Decision:
        """Consume the faults for one incoming transfer (called by the broker)."""
        with self._lock:
            if self._drop_after is not None:
                if self._drop_after == 0:
                    self._drop_after = None
                    return _Decision(TransferFault.DROP_CONNECTION, 0.0)
                self._drop_after -= 1
            if self._busy > 0:
                self._busy -= 1
                return _Decision(TransferFault.SERVER_BUSY, self._delay)
            return _Decision(TransferFault.NONE, self._delay)
