"""Fencing: whoever sends on behalf of a lease's owner checks, right before each send, that
the ownership still holds.

A process paused longer than its lease (SIGSTOP, a VM or garbage-collection pause) resumes in
the middle of whatever it was doing while another instance owns its feed range and has
published newer changes. Each further send of the old owner would put an aggregate's older
state after its newer one. The owner (the change-feed processor) installs a fence around its
handler call; the publishers call ``check_fence`` immediately before each send, on the thread
that performs it, and a fence that no longer holds raises ``FencedError``: the send does not
happen and the page is left to the lease's next owner.

The fence lives in a context variable, so it follows the handler into the worker threads that
copy its context, and code outside a fenced call (the Functions host, whose leases the host
manages, a re-drive) sends unfenced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Fence", "FencedError", "check_fence", "fenced"]

#: Returns when the caller still acts for the owner; raises ``FencedError`` when it does not.
Fence = Callable[[], None]

_current: ContextVar[Fence | None] = ContextVar("events_fence", default=None)


class FencedError(Exception):
    """The owner this work was done for no longer holds its lease: nothing was sent, and the
    work belongs to the lease's next owner. Neither transient nor permanent for the work
    itself: it must not be retried here."""

    transient = False


@contextmanager
def fenced(fence: Fence) -> Iterator[None]:
    """Run the block under ``fence``: every ``check_fence`` inside it calls ``fence``."""
    token = _current.set(fence)
    try:
        yield
    finally:
        _current.reset(token)


def check_fence() -> None:
    """Raise ``FencedError`` when the fence around this call no longer holds (no-op when no
    fence is installed)."""
    fence = _current.get()
    if fence is not None:
        fence()
