"""A change-feed processor: leases, fair share across instances, checkpoint after the handler.

Per step (``run_once``), the processor
1. every ``acquire_interval``: creates missing leases (one per feed range) and takes its fair
   share of them (free or expired ones first, then one stolen from an over-loaded owner);
2. renews leases last written ``renew_interval`` ago or earlier;
3. reads one page (at most ``max_items``) per owned lease and hands it to ``handler``.

Guarantees:
- The checkpoint (continuation) is written to the lease ONLY after the handler returned for
  that page. A handler that raises (transient or not: nothing may be lost) gets the SAME page
  again after a capped exponential backoff; the checkpoint does not move meanwhile.
- Reads and checkpoint writes are pipelined, each on one background thread per processor:
  as soon as page N arrives, page N+1 is read (its position is page N's continuation, known
  before N is handled), while page N is handled and its checkpoint written. Page N's write is
  joined before page N+1 is handled, before any other write to the lease (renewal, release)
  and at the end of ``run_once``; when it lost the lease (412), page N+1 is dropped
  unhandled. So at most one handled page per lease is not yet durable: a crash replays at
  most that page. A page read ahead is used only if the handled position is still the one it
  was read from; a failed read-ahead is read again at once, a failed read on the next step.
- At-least-once: a page is handled again only when its checkpoint was not written (crash,
  lease lost to another instance mid-batch, stop while retrying).
- ``checkpoint_interval`` (default 0: after every page) trades lease writes for replay: with
  N seconds, a handled page's checkpoint may wait up to N seconds in memory (written by the
  next page, renewal or release), and a crash replays what was handled in that time.
- Leases are renewed by a background thread while ``run`` is active, so a long handler does
  not lose its lease; in ``run_once`` stepping (tests), renewal happens between steps and
  between handler retries.
- ``start_from`` applies only when a lease is created; an existing lease resumes from its
  checkpoint (or the start recorded when it was created).
- Each handler call runs under a fence (``events.fencing``) that publishers check before each
  send: once the lease is no longer held, or has expired by this instance's clock (the
  process was paused past it), the check raises FencedError, the handler is not retried and
  the lease is dropped without a checkpoint: its next owner handles the page.
- A handler still running ``handler_timeout`` seconds after it was called (stuck: a call
  without a deadline, a deadlock) stops the renewal of its lease, with one WARNING naming the
  lease: the lease expires ``lease_duration`` after its last renewal and another instance
  takes it over from the last checkpoint. Threads cannot be killed; when the stuck call
  returns, its checkpoint write finds the lease taken (412) and the page is dropped
  (at-least-once). ``handler_timeout`` must exceed the longest healthy handler call; the
  relay bounds each network call (docs/decisions.md, 15).
- Stop (``stop_event``): the current page is finished (or, while retrying, abandoned without
  a checkpoint), then every lease is released with its last checkpoint.
- Logs name the processor and lease in the message text; a failing read, renewal, checkpoint
  or handler logs one WARNING when it starts failing and one INFO when it works again.

Pages of one lease are handled in order, one at a time; several owned leases are read in
turn by the same thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from events.availability import AvailabilityLog
from events.changefeed.errors import LeaseLostError, is_transient
from events.changefeed.feed import (
    ChangeFeed,
    FeedRange,
    Page,
    Position,
    StartFrom,
    is_start,
)
from events.changefeed.leases import Lease, LeaseManager, LeaseStore
from events.fencing import FencedError, fenced

__all__ = ["Backoff", "ChangeFeedProcessor", "Handler", "default_instance_id"]

logger = logging.getLogger(__name__)

#: Receives one page of changed documents; returns when they are handled (its result is
#: ignored), raises to have the same page delivered again.
Handler = Callable[[list[dict[str, Any]]], object]

_RENEWER_JOIN_TIMEOUT: Final = 10.0
#: Default seconds a handler call may run before its lease is no longer renewed.
DEFAULT_HANDLER_TIMEOUT: Final = 45.0
_T = TypeVar("_T")


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential delays (seconds) between handler retries."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1)))


@dataclass
class _Owned:
    #: The lease as last written by this instance; stale while ``pending`` is set.
    lease: Lease
    #: Everything before this position is handled (a continuation), or the lease's start.
    position: Position
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The checkpoint write in flight for this lease, if any (joined under ``lock``).
    pending: Future[Lease] | None = None
    #: (position, the read of the page after it), started before that position was handled.
    ahead: tuple[Position, Future[Page]] | None = None
    #: When the handler call in progress for this lease started (None: no call running).
    handling_since: datetime | None = None

    @property
    def continuation(self) -> str | None:
        return None if is_start(self.position) else str(self.position)


class _Background:
    """One thread running submitted calls in order (checkpoint writes, or read-ahead).

    Started on the first call, stopped by ``close`` (and started again if used later).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, call: Callable[[], _T]) -> Future[_T]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
            return self._executor.submit(call)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class ChangeFeedProcessor:
    def __init__(
        self,
        feed: ChangeFeed,
        lease_store: LeaseStore,
        handler: Handler,
        *,
        name: str,
        instance_id: str | None = None,
        start_from: StartFrom = "beginning",
        max_items: int = 100,
        poll_interval: float = 1.0,
        lease_duration: float = 60.0,
        renew_interval: float = 17.0,
        acquire_interval: float = 13.0,
        checkpoint_interval: float = 0.0,
        handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        """``name`` is the lease prefix: one per processor (and per replay) on a lease store."""
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if renew_interval >= lease_duration:
            raise ValueError("renew_interval must be shorter than lease_duration")
        if not handler_timeout > 0:
            raise ValueError("handler_timeout must be greater than 0")
        self.name = name
        self.instance_id = instance_id or default_instance_id()
        self._feed = feed
        self._handler = handler
        self._start_from = start_from
        self._max_items = max_items
        self._poll_interval = poll_interval
        self._renew_interval = timedelta(seconds=renew_interval)
        self._acquire_interval = timedelta(seconds=acquire_interval)
        self._checkpoint_interval = timedelta(seconds=checkpoint_interval)
        self._handler_timeout = timedelta(seconds=handler_timeout)
        self._availability = AvailabilityLog(logger)
        self._backoff = backoff or Backoff()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._leases = LeaseManager(
            lease_store,
            prefix=name,
            instance_id=self.instance_id,
            lease_duration=timedelta(seconds=lease_duration),
            clock=self._clock,
        )
        self._owned: dict[str, _Owned] = {}
        self._owned_lock = threading.Lock()
        self._writer = _Background(f"checkpoint-writer-{name}")
        self._reader = _Background(f"read-ahead-{name}")
        self._next_balance: datetime | None = None
        self._stop = threading.Event()
        self.documents_handled = 0
        self.batches_handled = 0

    # -- public stepping -------------------------------------------------------------------

    @property
    def owned_leases(self) -> list[str]:
        """Ids of the leases this instance holds, sorted."""
        with self._owned_lock:
            return sorted(self._owned)

    def run_once(self) -> int:
        """One step (balance if due, renew if due, one page per owned lease); returns the
        number of documents handled. Every checkpoint of the step is written (or failed) on
        return."""
        try:
            return self._step()
        finally:
            self._settle_all()

    def run(self, stop_event: threading.Event) -> None:
        """Process until ``stop_event`` is set, then release the leases."""
        self._stop = stop_event
        renewer_stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_loop,
            args=(renewer_stop,),
            name=f"lease-renewer-{self.name}",
            daemon=True,
        )
        renewer.start()
        logger.info(
            "change feed processor started processor=%s instance=%s", self.name, self.instance_id
        )
        try:
            while not stop_event.is_set():
                try:
                    # Checkpoint writes stay in flight across steps: each overlaps the next read.
                    handled = self._step()
                except Exception as exc:
                    # A dead processor thread would stall its feed silently: log, wait, go on.
                    # Nothing is skipped: the checkpoint only moves after a handled page.
                    if self._availability.down(
                        f"change feed processor={self.name}", f"step failed: {exc!r}"
                    ):
                        logger.debug("step failure processor=%s", self.name, exc_info=True)
                    stop_event.wait(self._poll_interval)
                    continue
                self._availability.up(f"change feed processor={self.name}")
                if handled == 0:
                    stop_event.wait(self._poll_interval)
        finally:
            renewer_stop.set()
            renewer.join(_RENEWER_JOIN_TIMEOUT)
            self.release_all()
            self._writer.close()
            self._reader.close()
            logger.info(
                "change feed processor stopped processor=%s batches=%d documents=%d",
                self.name,
                self.batches_handled,
                self.documents_handled,
            )

    def stop(self) -> None:
        self._stop.set()

    def release_all(self) -> None:
        """Give up every lease, keeping each one's last checkpoint."""
        for owned in self._snapshot():
            with owned.lock:
                try:
                    if self._settle(owned):
                        self._leases.release(owned.lease, owned.continuation)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    logger.warning(
                        "lease release failed processor=%s lease=%s error=%s",
                        self.name,
                        owned.lease.id,
                        exc,
                        extra={"lease_id": owned.lease.id},
                    )
            self._drop(owned.lease.id)
            logger.info(
                "lease released processor=%s lease=%s",
                self.name,
                owned.lease.id,
                extra={"lease_id": owned.lease.id},
            )

    # -- internals ---------------------------------------------------------------------------

    def _step(self) -> int:
        now = self._clock()
        if self._next_balance is None or now >= self._next_balance:
            self._balance()
            self._next_balance = now + self._acquire_interval
        self._renew_due()
        handled = 0
        for owned in self._snapshot():
            if self._stop.is_set():
                break
            handled += self._process(owned)
        return handled

    def _settle(self, owned: _Owned) -> bool:
        """Wait for the checkpoint write in flight for ``owned`` (caller holds ``owned.lock``);
        False when it lost the lease (then dropped)."""
        pending, owned.pending = owned.pending, None
        if pending is None:
            return True
        try:
            owned.lease = pending.result()
        except LeaseLostError:
            # Another instance owns the range now and resumes from the previous checkpoint:
            # the last handled page will be handled twice (at-least-once).
            self._lost(owned)
            return False
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The position is kept in memory and written by the next checkpoint or renewal.
            self._availability.down(self._key("checkpoint", owned), str(exc))
        else:
            self._availability.up(self._key("checkpoint", owned))
        return True

    def _settle_all(self) -> None:
        for owned in self._snapshot():
            with owned.lock:
                self._settle(owned)

    def _snapshot(self) -> list[_Owned]:
        with self._owned_lock:
            return list(self._owned.values())

    def _drop(self, lease_id: str) -> None:
        with self._owned_lock:
            self._owned.pop(lease_id, None)

    def _balance(self) -> None:
        try:
            self._leases.ensure(self._feed.feed_ranges(), self._start_from, self._current)
            acquired = self._leases.balance(held=self.owned_leases)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._availability.down(f"lease balancing processor={self.name}", str(exc))
            return
        self._availability.up(f"lease balancing processor={self.name}")
        with self._owned_lock:
            for lease in acquired:
                self._owned[lease.id] = _Owned(lease=lease, position=lease.position)
        for lease in acquired:
            logger.info(
                "lease acquired processor=%s lease=%s instance=%s",
                self.name,
                lease.id,
                self.instance_id,
                extra={"lease_id": lease.id},
            )

    def _current(self, feed_range: FeedRange) -> str:
        return self._feed.read_page(feed_range, "now", 1).continuation

    def _renew_loop(self, stop: threading.Event) -> None:
        period = max(0.05, self._renew_interval.total_seconds() / 2)
        while not stop.wait(period):
            self._renew_due()

    def _renew_due(self) -> None:
        for owned in self._snapshot():
            self._renew_if_due(owned)

    def _renew_if_due(self, owned: _Owned) -> None:
        with owned.lock:
            if owned.pending is not None and not owned.pending.done():
                return  # the checkpoint being written renews the lease; don't wait for it
            if not self._settle(owned):
                return
            now = self._clock()
            if now - owned.lease.timestamp < self._renew_interval:
                return
            if self._is_stuck(owned, now):
                return
            try:
                owned.lease = self._leases.renew(owned.lease, owned.continuation)
            except LeaseLostError:
                self._lost(owned)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._availability.down(self._key("lease renewal", owned), str(exc))
            else:
                self._availability.up(self._key("lease renewal", owned))

    def _is_stuck(self, owned: _Owned, now: datetime) -> bool:
        """True (with one WARNING) while the handler call of ``owned`` has run for longer than
        ``handler_timeout``: its lease is then left to expire so that another instance takes
        the feed range over."""
        since = owned.handling_since
        if since is None or now - since < self._handler_timeout:
            return False
        if owned.lease.expires_at is not None:
            expiry = f"expires at {owned.lease.expires_at.isoformat()}"
        else:
            expiry = "is not renewed"
        self._availability.down(
            self._key("handler", owned),
            f"handler call running for {(now - since).total_seconds():.0f} s (more than "
            f"handler_timeout={self._handler_timeout.total_seconds():g} s): no longer renewing "
            f"the lease, it {expiry} and another instance can take it over",
        )
        return True

    def _key(self, what: str, owned: _Owned) -> str:
        return f"{what} processor={self.name} lease={owned.lease.id}"

    def _lost(self, owned: _Owned) -> None:
        self._drop(owned.lease.id)
        logger.info(
            "lease lost processor=%s lease=%s instance=%s",
            self.name,
            owned.lease.id,
            self.instance_id,
            extra={"lease_id": owned.lease.id},
        )

    def _is_owned(self, owned: _Owned) -> bool:
        with self._owned_lock:
            return self._owned.get(owned.lease.id) is owned

    def _process(self, owned: _Owned) -> int:
        page = self._next_page(owned)
        if page is not None and page.items:
            # Read the next page while this one is handled and checkpointed.
            after = page.continuation
            read = self._reader.submit(
                lambda: self._feed.read_page(owned.lease.feed_range, after, self._max_items)
            )
            owned.ahead = (after, read)
        with owned.lock:
            # The page was read while the previous checkpoint was being written: join it
            # first, and drop the page unhandled if that write found the lease taken.
            if not (self._settle(owned) and self._is_owned(owned)) or page is None:
                return 0
            if not page.items:
                owned.position = page.continuation
                return 0
        attempts = self._deliver(owned, page.items)
        if attempts == 0:
            return 0
        with owned.lock:
            owned.position = page.continuation
            if self._clock() - owned.lease.timestamp >= self._checkpoint_interval:
                lease, continuation = owned.lease, page.continuation
                owned.pending = self._writer.submit(
                    lambda: self._leases.checkpoint(lease, continuation)
                )
        self.batches_handled += 1
        self.documents_handled += len(page.items)
        first_lsn, last_lsn = page.items[0].get("_lsn"), page.items[-1].get("_lsn")
        logger.info(
            "change feed batch processor=%s lease=%s documents=%d attempts=%d lsn=%s..%s",
            self.name,
            owned.lease.id,
            len(page.items),
            attempts,
            first_lsn,
            last_lsn,
            extra={
                "lease_id": owned.lease.id,
                "first_lsn": first_lsn,
                "last_lsn": last_lsn,
            },
        )
        return len(page.items)

    def _next_page(self, owned: _Owned) -> Page | None:
        """The page after the handled position (read ahead or now); None when the read failed
        (retried on the next step)."""
        ahead, owned.ahead = owned.ahead, None
        if ahead is not None and ahead[0] == owned.position:
            with contextlib.suppress(Exception):  # read again below, where failures are logged
                return ahead[1].result()
        key = self._key("change feed read", owned)
        try:
            page = self._feed.read_page(owned.lease.feed_range, owned.position, self._max_items)
        except Exception as exc:  # noqa: BLE001 - a failed read is retried on the next step
            level = logging.WARNING if is_transient(exc) else logging.ERROR
            self._availability.down(key, f"{type(exc).__name__}: {exc}", level=level)
            return None
        self._availability.up(key)
        return page

    def _lapsed(self, owned: _Owned) -> datetime | None:
        """The lease's expiry when this instance's clock has reached it, else None."""
        expires_at = owned.lease.expires_at
        if expires_at is None or self._clock() < expires_at:
            return None
        return expires_at

    def _expired(self, owned: _Owned) -> bool:
        """True (and the lease dropped) when the lease expired by this instance's clock since
        it was last written: another instance may own the range and have handled newer
        changes, so handling an older page now could publish an aggregate's old state after
        its new one (a paused process resuming, split brain). The page is left to the owner."""
        expires_at = self._lapsed(owned)
        if expires_at is None:
            return False
        logger.warning(
            "lease expired before its page was handled processor=%s lease=%s expired_at=%s: "
            "page left to the lease's next owner",
            self.name,
            owned.lease.id,
            expires_at.isoformat(),
            extra={"lease_id": owned.lease.id},
        )
        self._lost(owned)
        return True

    def _hold(self, owned: _Owned) -> None:
        """The fence of a handler call (``events.fencing``), checked before each send: raises
        FencedError once the lease was lost, or expired by this instance's clock (the renewer
        keeps a healthy call's lease ahead of that clock; a paused process's is behind it)."""
        if not self._is_owned(owned):
            raise FencedError(f"lease {owned.lease.id} was lost while its page was handled")
        expires_at = self._lapsed(owned)
        if expires_at is not None:
            raise FencedError(
                f"lease {owned.lease.id} expired at {expires_at.isoformat()} while its page "
                "was handled"
            )

    def _fenced_out(self, owned: _Owned, error: FencedError) -> None:
        """The handler stopped at a send its lease no longer covered: the rest of the page
        (and the page itself, whose checkpoint is not written) is left to the next owner."""
        logger.warning(
            "handler fenced out processor=%s lease=%s: %s; the rest of the page is left to the "
            "lease's next owner",
            self.name,
            owned.lease.id,
            error,
            extra={"lease_id": owned.lease.id},
        )
        if self._is_owned(owned):
            self._lost(owned)

    def _deliver(self, owned: _Owned, items: list[dict[str, Any]]) -> int:
        """Hand ``items`` to the handler until it returns; the number of attempts, or 0 when
        the page was abandoned (stop requested or lease lost while retrying)."""
        attempt = 0
        key = self._key("handler", owned)
        while True:
            attempt += 1
            if self._expired(owned):
                return 0
            owned.handling_since = self._clock()
            try:
                with fenced(lambda: self._hold(owned)):
                    self._handler(items)
            except FencedError as exc:
                owned.handling_since = None
                self._fenced_out(owned, exc)
                return 0
            except Exception as exc:  # noqa: BLE001 - every failure is retried: nothing is lost
                owned.handling_since = None
                delay = self._backoff.delay(attempt)
                # One WARNING when the handler starts failing, not one per retry.
                self._availability.down(
                    key, f"failed, retrying with backoff: {type(exc).__name__}: {exc}"
                )
                logger.debug(
                    "handler failed processor=%s lease=%s attempt=%d transient=%s error=%s "
                    "retry_in=%.1fs",
                    self.name,
                    owned.lease.id,
                    attempt,
                    is_transient(exc),
                    type(exc).__name__,
                    delay,
                    extra={"lease_id": owned.lease.id},
                )
                if self._stop.is_set():
                    return 0
                self._wait(delay)
                if self._stop.is_set():
                    return 0
                self._renew_if_due(owned)
                if not self._is_owned(owned):
                    return 0
            else:
                owned.handling_since = None
                self._availability.up(key)
                return attempt

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._stop.wait(seconds)
