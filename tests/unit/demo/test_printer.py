"""The demo printer: every line whole, whatever thread prints it."""

from __future__ import annotations

import io
import logging
import threading
import time

from devstack.demo.printer import Printer, PrinterHandler


class SlowTerminal(io.StringIO):
    """Takes each write in small pieces and lets other threads run in between, as a slow
    terminal or a full pipe does."""

    def write(self, text: str) -> int:
        for start in range(0, len(text), 16):
            super().write(text[start : start + 16])
            time.sleep(0)
        return len(text)


def test_printer_many_threads_on_a_slow_terminal_lines_never_interleave() -> None:
    terminal = SlowTerminal()
    printer = Printer(terminal, terminal)
    texts = {f"thread-{t}": "x" * (100 + t) for t in range(8)}

    def hammer(name: str) -> None:
        for i in range(100):
            text = f"{name} {i} {texts[name]}"
            if i % 3:
                printer.line(text)
            else:
                printer.error(text)

    threads = [threading.Thread(target=hammer, args=(name,)) for name in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = terminal.getvalue().splitlines()
    assert len(lines) == 8 * 100
    for line in lines:
        name, _number, body = line.split(" ", 2)
        assert body == texts[name], line


def test_printer_handler_log_record_printed_as_one_error_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("tests.unit.demo.printer")
    logger.propagate = False
    logger.addHandler(PrinterHandler(Printer(out, err)))
    try:
        logger.warning("relay %s restarted", "relay-2")
        logger.info("not shown")
    finally:
        logger.handlers.clear()

    assert out.getvalue() == ""
    assert err.getvalue() == "  WARNING tests.unit.demo.printer: relay relay-2 restarted\n"
