"""Errors of the change-feed processor and its ports (the processor imports no other).

    LeaseLostError      another instance owns the lease now: a write lost on its etag (412),
                        or a create found the lease there (409); the loser drops the lease

A store adapter reports its own failures with its own errors; the processor asks only
``is_transient`` of them: an error whose class says ``transient = True`` (as the relay's
error tree does) is retried on the next step, anything else is a bug and propagates.
"""

from __future__ import annotations

__all__ = ["LeaseLostError", "is_transient"]


class LeaseLostError(Exception):
    """Another instance owns the lease now."""

    transient = True


def is_transient(error: BaseException) -> bool:
    """True when retrying the same operation later may succeed."""
    return bool(getattr(error, "transient", False))
