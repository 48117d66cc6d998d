"""Errors of the local dev stack.

DevStackError                  a local server could not be set up, started or stopped
"""

from __future__ import annotations

__all__ = ["DevStackError"]


class DevStackError(Exception):
    """A local dev-stack server is missing a prerequisite, failed to start, or died."""
