"""events.fencing: the fence installed around a call is the one its sends check."""

from __future__ import annotations

import contextvars
import threading

import pytest

from events.fencing import FencedError, check_fence, fenced


def _refuse() -> None:
    raise FencedError("the lease expired")


def test_check_fence_outside_any_fence_sends_unfenced() -> None:
    check_fence()  # the Functions host and a re-drive send without a fence


def test_check_fence_inner_fence_applies_and_the_outer_one_is_back_after_it() -> None:
    calls: list[str] = []
    with fenced(lambda: calls.append("outer")):
        with fenced(_refuse), pytest.raises(FencedError):
            check_fence()
        check_fence()
    check_fence()
    assert calls == ["outer"]


def test_check_fence_a_fence_that_raised_stays_installed_until_its_block_ends() -> None:
    with fenced(_refuse):
        for _ in range(2):
            with pytest.raises(FencedError):
                check_fence()
    check_fence()


def test_check_fence_follows_the_call_into_a_thread_that_copies_its_context() -> None:
    outcome: list[str] = []

    def send() -> None:
        try:
            check_fence()
            outcome.append("sent")
        except FencedError:
            outcome.append("fenced")

    with fenced(_refuse):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(send,))
        plain = threading.Thread(target=send)
        for thread in (copied, plain):
            thread.start()
            thread.join(10)
    assert outcome == ["fenced", "sent"]
