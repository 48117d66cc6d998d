"""A quarantine store that lets a test run another process's step at a chosen moment."""

from __future__ import annotations

from collections.abc import Callable, Collection

from events.core.quarantine import InMemoryQuarantine, ParkedAggregate, QuarantineRecord


class Interleaving(InMemoryQuarantine):
    """The in-memory store with a hook after one of its calls: what another process (the
    relay, or a re-drive) does at that moment. Each hook runs once."""

    def __init__(self) -> None:
        super().__init__()
        self.after_records_of: Callable[[], object] | None = None
        self.after_release: Callable[[], object] | None = None
        self.after_parked: Callable[[], object] | None = None

    def records_of(self, feed: str, partition_key: str) -> list[QuarantineRecord]:
        found = super().records_of(feed, partition_key)
        hook, self.after_records_of = self.after_records_of, None
        if hook is not None:
            hook()
        return found

    def release(self, parked: ParkedAggregate) -> bool:
        released = super().release(parked)
        hook, self.after_release = self.after_release, None
        if hook is not None:
            hook()
        return released

    def parked(self, feed: str, partition_keys: Collection[str]) -> dict[str, int | None]:
        found = super().parked(feed, partition_keys)
        hook, self.after_parked = self.after_parked, None
        if hook is not None:
            hook()
        return found
