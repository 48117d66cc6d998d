"""The one way the demo writes to the terminal: whole lines, one at a time.

Consumer threads, the status loop, chaos and errors all print at once; ``print()`` writes the
text and the newline separately, so lines from different threads could interleave. Every line
goes through one ``Printer`` instead, which writes it whole under one lock. Log records (ours and
the SDKs') are routed to it too, so nothing reaches the terminal behind its back.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

__all__ = ["Printer", "PrinterHandler"]


class Printer:
    """Writes whole lines to ``out`` (or ``err`` for problems) under one lock."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        self._write(self._out, text)

    def error(self, text: str) -> None:
        self._write(self._err, text)

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            # Both streams share the lock: on a terminal they are the same screen.
            self._out.flush()
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()


class PrinterHandler(logging.Handler):
    """A logging handler that prints each record as one line through a ``Printer``."""

    def __init__(self, printer: Printer, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._printer = printer
        self.setFormatter(logging.Formatter("  %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.error(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
