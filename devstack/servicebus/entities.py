"""Queues, topics, subscriptions and dead-letter queues: the broker's state, without any AMQP.

Every method runs on the broker's reactor thread; nothing here locks. Times are
``time.time()`` seconds passed in by the caller, so the rules are testable without clocks.

Delivery counts follow the Python SDK's view: the AMQP header carries the number of earlier
deliveries (0 on the first). A lock that ends without completion (abandon, expiry, receiver
gone) counts one delivery; reaching ``maxDeliveryCount`` moves the message to the dead-letter
queue with reason ``MaxDeliveryCountExceeded``.
"""

from __future__ import annotations

import bisect
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from events.deployment.topology import (
    QueueSpec,
    RuleSpec,
    SubscriptionSpec,
    TopicSpec,
    Topology,
    iso_duration_seconds,
)

from .filters import Predicate, compile_rules
from .messages import MessageFacts, StoredMessage

__all__ = [
    "DuplicateDetector",
    "Lock",
    "MessageStore",
    "Namespace",
    "PublishRefusedError",
    "PublishResult",
    "SendEntity",
]

DEAD_LETTER_SUFFIX = "/$deadletterqueue"
SESSION_ID_MISSING = (
    "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that "
    "have session support enabled can only receive messages that have the SessionId set to a "
    "valid value."
)


_MAX_FORWARD_HOPS = 4


class PublishRefusedError(Exception):
    """A send the broker refuses; ``condition`` is the AMQP error condition Service Bus uses."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(description)
        self.condition = condition
        self.description = description


@dataclass(frozen=True)
class PublishResult:
    enqueued: int
    duplicates: int


class DuplicateDetector:
    """Message ids seen within the window; a repeat inside it is a duplicate."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._seen: OrderedDict[str, float] = OrderedDict()

    def is_duplicate(self, message_id: str, now: float) -> bool:
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._window:
                break
            del self._seen[oldest]
        if message_id in self._seen:
            return True
        self._seen[message_id] = now
        return False


@dataclass
class Lock:
    token: uuid.UUID
    message: StoredMessage
    owner: int
    locked_until: float
    session_id: str | None
    deferred: bool = False  # received by sequence number: it stays deferred until completed


@dataclass
class _Session:
    messages: list[StoredMessage] = field(default_factory=list)
    owner: int | None = None
    locked_until: float = 0.0
    state: bytes | None = None
    state_updated_at: float | None = None


def _by_sequence(message: StoredMessage) -> int:
    return message.sequence_number


class MessageStore:
    """A queue, a subscription or a dead-letter queue: available messages and their locks."""

    def __init__(
        self,
        path: str,
        *,
        requires_session: bool = False,
        max_delivery_count: int = 10,
        lock_seconds: float = 60.0,
        dead_letter_on_expiry: bool = False,
        default_ttl: float | None = None,
        dead_letter: MessageStore | None = None,
        on_dead_letter: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.default_ttl = default_ttl
        self.requires_session = requires_session
        self.max_delivery_count = max_delivery_count
        self.lock_seconds = lock_seconds
        self.dead_letter_on_expiry = dead_letter_on_expiry
        self.dead_letter = dead_letter
        self._on_dead_letter = on_dead_letter
        #: Auto-forwarding (set through the administration endpoint): what arrives, or what is
        #: dead-lettered, goes on to that topic or queue instead.
        self.forward_to: SendEntity | None = None
        self.forward_dead_lettered_to: SendEntity | None = None
        self._plain: list[StoredMessage] = []
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[uuid.UUID, Lock] = {}
        self._deferred: dict[int, StoredMessage] = {}

    # ---------------------------------------------------------------- enqueue / inspect
    def enqueue(self, message: StoredMessage) -> None:
        if self.requires_session and message.facts.session_id is not None:
            bisect.insort(
                self._session(message.facts.session_id).messages, message, key=_by_sequence
            )
        else:
            bisect.insort(self._plain, message, key=_by_sequence)

    def _session(self, session_id: str) -> _Session:
        return self._sessions.setdefault(session_id, _Session())

    def available(self) -> int:
        return len(self._plain) + sum(len(s.messages) for s in self._sessions.values())

    def active_count(self) -> int:
        """What Service Bus counts as active: available, locked and deferred messages."""
        locked = sum(1 for lock in self._locks.values() if not lock.deferred)
        return self.available() + locked + len(self._deferred)

    def peek(self, from_sequence: int, count: int, session_id: str | None) -> list[StoredMessage]:
        if session_id is not None:
            pool: Iterable[StoredMessage] = self._session(session_id).messages
        else:
            pool = self._plain
        pending = [lock.message for lock in self._locks.values() if not lock.deferred]
        deferred = [m for m in self._deferred.values() if m.facts.session_id == session_id]
        if session_id is None and self.requires_session:
            deferred = list(self._deferred.values())
        everything = sorted([*pool, *pending, *deferred], key=_by_sequence)
        return [m for m in everything if m.sequence_number >= from_sequence][:count]

    # ---------------------------------------------------------------- sessions
    def acquire_session(self, owner: int, wanted: str | None, now: float) -> str | None:
        """Lock a session for ``owner``: the one asked for, or the next with messages."""
        if wanted is not None:
            session = self._session(wanted)
            if session.owner not in (None, owner) and session.locked_until > now:
                return None
            session.owner = owner
            session.locked_until = now + self.lock_seconds
            return wanted
        candidates = [
            (s.messages[0].sequence_number, sid)
            for sid, s in self._sessions.items()
            if s.messages and (s.owner is None or s.locked_until <= now)
        ]
        if not candidates:
            return None
        _, session_id = min(candidates)
        session = self._sessions[session_id]
        session.owner = owner
        session.locked_until = now + self.lock_seconds
        return session_id

    def session_owner(self, session_id: str) -> int | None:
        session = self._sessions.get(session_id)
        return None if session is None else session.owner

    def renew_session(self, session_id: str, now: float) -> float | None:
        session = self._sessions.get(session_id)
        if session is None or session.owner is None:
            return None
        session.locked_until = now + self.lock_seconds
        return session.locked_until

    def session_state(self, session_id: str) -> bytes | None:
        return self._session(session_id).state

    def set_session_state(self, session_id: str, state: bytes | None, now: float) -> None:
        session = self._session(session_id)
        session.state = state
        session.state_updated_at = now

    def session_ids(self, state_updated_after: float | None = None) -> list[str]:
        """Sessions with messages or state; or, given a time, those whose state was set since."""
        if state_updated_after is not None:
            return sorted(
                sid
                for sid, s in self._sessions.items()
                if s.state_updated_at is not None and s.state_updated_at > state_updated_after
            )
        return sorted(sid for sid, s in self._sessions.items() if s.messages or s.state)

    def has_waiting_session(self, now: float) -> bool:
        return any(
            s.messages and (s.owner is None or s.locked_until <= now)
            for s in self._sessions.values()
        )

    # ---------------------------------------------------------------- receive
    def take(self, session_id: str | None, now: float) -> StoredMessage | None:
        """Remove and return the next deliverable message (expired ones are moved on)."""
        pool = self._session(session_id).messages if session_id is not None else self._plain
        while pool:
            message = pool.pop(0)
            if message.expires_at is not None and message.expires_at <= now:
                if self.dead_letter_on_expiry:
                    self._move_to_dead_letter(
                        message, "TTLExpiredException", "The message expired and was dead lettered."
                    )
                continue
            return message
        return None

    def lock(self, message: StoredMessage, owner: int, session_id: str | None, now: float) -> Lock:
        lock = Lock(uuid.uuid4(), message, owner, now + self.lock_seconds, session_id)
        self._locks[lock.token] = lock
        return lock

    def find_lock(self, token: uuid.UUID) -> Lock | None:
        return self._locks.get(token)

    def renew_lock(self, token: uuid.UUID, now: float) -> float | None:
        lock = self._locks.get(token)
        if lock is None:
            return None
        lock.locked_until = now + self.lock_seconds
        return lock.locked_until

    def deferred(self, sequence_number: int) -> StoredMessage | None:
        return self._deferred.get(sequence_number)

    def receive_deferred(
        self, message: StoredMessage, owner: int, now: float, delete: bool
    ) -> Lock | None:
        """Hand out a deferred message: removed (receive-and-delete) or locked (peek-lock)."""
        if delete:
            self._deferred.pop(message.sequence_number, None)
            return None
        lock = Lock(
            uuid.uuid4(),
            message,
            owner,
            now + self.lock_seconds,
            message.facts.session_id,
            deferred=True,
        )
        self._locks[lock.token] = lock
        return lock

    # ---------------------------------------------------------------- settle
    def complete(self, token: uuid.UUID) -> bool:
        lock = self._locks.pop(token, None)
        if lock is not None and lock.deferred:
            self._deferred.pop(lock.message.sequence_number, None)
        return lock is not None

    def abandon(self, token: uuid.UUID) -> bool:
        lock = self._locks.pop(token, None)
        if lock is None:
            return False
        self._end_lock(lock)
        return True

    def release(self, token: uuid.UUID) -> bool:
        """The client gave a delivery back unprocessed (AMQP ``released``: a prefetched message
        its receiver closed before handing it out): it returns without counting a delivery."""
        lock = self._locks.pop(token, None)
        if lock is None:
            return False
        if not lock.deferred:
            self.enqueue(lock.message)
        return True

    def defer(self, token: uuid.UUID) -> bool:
        lock = self._locks.pop(token, None)
        if lock is None:
            return False
        lock.message.delivery_count += 1
        lock.message.deferred = True
        self._deferred[lock.message.sequence_number] = lock.message
        return True

    def dead_letter_locked(
        self, token: uuid.UUID, reason: str | None, description: str | None
    ) -> bool:
        lock = self._locks.pop(token, None)
        if lock is None:
            return False
        self._deferred.pop(lock.message.sequence_number, None)
        self._move_to_dead_letter(replace(lock.message, deferred=False), reason, description)
        return True

    def _end_lock(self, lock: Lock) -> None:
        """A lock ended without settlement: the message returns (a deferred one stays aside)."""
        if not lock.deferred:
            self._return(lock.message)
            return
        lock.message.delivery_count += 1
        if lock.message.delivery_count >= self.max_delivery_count:
            self._deferred.pop(lock.message.sequence_number, None)
            self._move_to_dead_letter(
                replace(lock.message, deferred=False),
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {self.max_delivery_count} delivery attempts.",
            )

    def expire_locks(self, now: float) -> bool:
        """Return messages whose lock ran out; True when something became available."""
        expired = [t for t, lock in self._locks.items() if lock.locked_until <= now]
        for token in expired:
            self._end_lock(self._locks.pop(token))
        for session in self._sessions.values():
            if session.owner is not None and session.locked_until <= now:
                session.owner = None
        return bool(expired)

    def release_owner(self, owner: int) -> bool:
        """A receiver went away: its locks end (one delivery counted) and its sessions free."""
        tokens = [t for t, lock in self._locks.items() if lock.owner == owner]
        for token in tokens:
            self._end_lock(self._locks.pop(token))
        freed = False
        for session in self._sessions.values():
            if session.owner == owner:
                session.owner = None
                freed = True
        return bool(tokens) or freed

    def _return(self, message: StoredMessage) -> None:
        message.delivery_count += 1
        if message.delivery_count >= self.max_delivery_count:
            self._move_to_dead_letter(
                message,
                "MaxDeliveryCountExceeded",
                f"Message could not be consumed after {self.max_delivery_count} delivery attempts.",
            )
        else:
            self.enqueue(message)

    def _move_to_dead_letter(
        self, message: StoredMessage, reason: str | None, description: str | None
    ) -> None:
        if self.forward_dead_lettered_to is not None:
            self.forward_dead_lettered_to.forwarded(
                message.raw, message.facts, message.enqueued_at, message.hops + 1
            )
            return
        if self.dead_letter is None:
            return
        extra = dict(message.extra_properties)
        if reason is not None:
            extra["DeadLetterReason"] = reason
        if description is not None:
            extra["DeadLetterErrorDescription"] = description
        self.dead_letter.enqueue(
            replace(message, extra_properties=extra, dead_letter_source=self.path, expires_at=None)
        )
        if self._on_dead_letter is not None:
            self._on_dead_letter(self.path)

    def dead_letter_new(self, message: StoredMessage, reason: str, description: str) -> None:
        """Dead-letter a message on arrival (a session subscription given no session id)."""
        self._move_to_dead_letter(message, reason, description)


@dataclass
class _Scheduled:
    raw: bytes
    facts: MessageFacts
    enqueue_at: float


@dataclass
class SendEntity:
    """A topic or a queue: what a sender link targets.

    A message whose ``x-opt-scheduled-enqueue-time`` is in the future gets its sequence number
    at once and waits aside until that time (``release_due``), or until it is cancelled.
    """

    name: str
    duplicates: DuplicateDetector | None
    default_ttl: float
    stores: list[tuple[Predicate, MessageStore]]
    is_queue: bool
    sequence: int = 0
    scheduled: dict[int, _Scheduled] = field(default_factory=dict)

    def publish(self, messages: list[tuple[bytes, MessageFacts]], now: float) -> PublishResult:
        result, _numbers = self.schedule(messages, now)
        return result

    def schedule(
        self, messages: list[tuple[bytes, MessageFacts]], now: float
    ) -> tuple[PublishResult, list[int]]:
        """Publish (or schedule) messages; also returns the sequence number each one got."""
        if (
            self.is_queue
            and self.stores[0][1].requires_session
            and any(facts.session_id is None for _raw, facts in messages)
        ):
            raise PublishRefusedError("amqp:not-allowed", SESSION_ID_MISSING)
        enqueued = duplicates = 0
        numbers: list[int] = []
        for raw, facts in messages:
            if (
                self.duplicates is not None
                and facts.message_id is not None
                and self.duplicates.is_duplicate(facts.message_id, now)
            ):
                duplicates += 1
                numbers.append(0)
                continue
            self.sequence += 1
            numbers.append(self.sequence)
            when = facts.scheduled_enqueue_time
            if when is not None and when > now:
                self.scheduled[self.sequence] = _Scheduled(raw, facts, when)
            else:
                self._route(raw, facts, self.sequence, now)
            enqueued += 1
        return PublishResult(enqueued, duplicates), numbers

    def cancel(self, sequence_numbers: Iterable[int]) -> None:
        for number in sequence_numbers:
            self.scheduled.pop(number, None)

    def release_due(self, now: float) -> bool:
        """Enqueue the scheduled messages whose time has come; True when any was."""
        due = sorted(n for n, s in self.scheduled.items() if s.enqueue_at <= now)
        for number in due:
            item = self.scheduled.pop(number)
            self._route(item.raw, item.facts, number, now)
        return bool(due)

    def forwarded(self, raw: bytes, facts: MessageFacts, now: float, hops: int) -> None:
        """A message auto-forwarded here; Service Bus allows at most 4 hops."""
        if hops > _MAX_FORWARD_HOPS:
            return
        self.sequence += 1
        self._route(raw, facts, self.sequence, now, hops)

    def _route(
        self, raw: bytes, facts: MessageFacts, sequence: int, now: float, hops: int = 0
    ) -> None:
        ttl = facts.ttl_seconds if facts.ttl_seconds else self.default_ttl
        for predicate, store in self.stores:
            if not predicate(facts):
                continue
            if store.forward_to is not None:
                store.forward_to.forwarded(raw, facts, now, hops + 1)
                continue
            copy = StoredMessage(
                raw=raw,
                facts=facts,
                sequence_number=sequence,
                enqueued_at=now,
                expires_at=now + min(ttl, store.default_ttl or ttl),
                hops=hops,
            )
            if store.requires_session and facts.session_id is None:
                # Service Bus accepts the send and dead-letters the copy for this subscription.
                store.dead_letter_new(
                    copy,
                    "Session id is null.",
                    "Session enabled entity doesn't allow a message whose session identifier "
                    "is null.",
                )
            else:
                store.enqueue(copy)


def _lock_seconds(spec: SubscriptionSpec | QueueSpec) -> float:
    return float(iso_duration_seconds(spec.lock_duration))


class Namespace:
    """Every entity of a topology, found by the paths AMQP links use."""

    def __init__(
        self, topology: Topology, on_dead_letter: Callable[[str], None] | None = None
    ) -> None:
        bus = topology.service_bus
        self.max_message_size = bus.max_message_size_kb * 1024
        self._on_dead_letter = on_dead_letter
        self._send: dict[str, SendEntity] = {}
        self._receive: dict[str, MessageStore] = {}
        #: What each entity was declared (or created) with, by lower-case name / path; the
        #: administration endpoint describes entities from these.
        self.queue_specs: dict[str, QueueSpec] = {}
        self.topic_specs: dict[str, TopicSpec] = {}
        self.subscription_specs: dict[str, SubscriptionSpec] = {}  # "<topic>/<sub>"
        for topic in bus.topics:
            self.add_topic(topic)
        for queue in bus.queues:
            self.add_queue(queue)

    def _store(
        self,
        path: str,
        spec: SubscriptionSpec | QueueSpec,
        on_dead_letter: Callable[[str], None] | None,
    ) -> MessageStore:
        ttl = float(iso_duration_seconds(spec.default_message_time_to_live))
        dead_letter = MessageStore(path + "/$DeadLetterQueue", lock_seconds=_lock_seconds(spec))
        self._receive[(path + DEAD_LETTER_SUFFIX).lower()] = dead_letter
        store = MessageStore(
            path,
            requires_session=spec.requires_session,
            max_delivery_count=spec.max_delivery_count,
            lock_seconds=_lock_seconds(spec),
            dead_letter_on_expiry=spec.dead_lettering_on_message_expiration,
            default_ttl=ttl,
            dead_letter=dead_letter,
            on_dead_letter=on_dead_letter,
        )
        self._receive[path.lower()] = store
        return store

    def add_topic(self, topic: TopicSpec) -> None:
        self.topic_specs[topic.name.lower()] = topic.model_copy(update={"subscriptions": ()})
        self._send[topic.name.lower()] = SendEntity(
            name=topic.name,
            duplicates=_detector(topic),
            default_ttl=float(iso_duration_seconds(topic.default_message_time_to_live)),
            stores=[],
            is_queue=False,
        )
        for sub in topic.subscriptions:
            self.add_subscription(topic.name, sub)

    def add_subscription(self, topic: str, sub: SubscriptionSpec) -> None:
        """Add a subscription to a topic (compiling its rules may raise
        ``UnsupportedTopologyError``; nothing is changed then)."""
        predicate = compile_rules(sub.rules)
        entity = self._send[topic.lower()]
        store = self._store(f"{entity.name}/Subscriptions/{sub.name}", sub, self._on_dead_letter)
        entity.stores.append((predicate, store))
        self.subscription_specs[f"{topic}/{sub.name}".lower()] = sub

    def set_rules(self, topic: str, subscription: str, rules: tuple[RuleSpec, ...]) -> None:
        """Replace a subscription's rules; with none left it receives nothing (Service Bus)."""
        key = f"{topic}/{subscription}".lower()
        predicate: Predicate = compile_rules(rules) if rules else (lambda _facts: False)
        entity = self._send[topic.lower()]
        store = self._receive[f"{entity.name}/subscriptions/{subscription}".lower()]
        entity.stores = [(predicate if s is store else p, s) for p, s in entity.stores]
        self.subscription_specs[key] = self.subscription_specs[key].model_copy(
            update={"rules": rules}
        )

    def remove_subscription(self, topic: str, subscription: str) -> None:
        entity = self._send[topic.lower()]
        path = f"{entity.name}/subscriptions/{subscription}".lower()
        store = self._receive.pop(path)
        self._receive.pop(path + DEAD_LETTER_SUFFIX, None)
        entity.stores = [(p, s) for p, s in entity.stores if s is not store]
        del self.subscription_specs[f"{topic}/{subscription}".lower()]

    def remove_entity(self, name: str) -> None:
        """Remove a queue or a topic (with its subscriptions)."""
        key = name.lower()
        self._send.pop(key, None)
        self.queue_specs.pop(key, None)
        self.topic_specs.pop(key, None)
        for path in [p for p in self._receive if p == key or p.startswith(key + "/")]:
            del self._receive[path]
        for sub in [k for k in self.subscription_specs if k.startswith(key + "/")]:
            del self.subscription_specs[sub]

    def sender_entities(self) -> dict[str, SendEntity]:
        return dict(self._send)

    def add_queue(self, queue: QueueSpec) -> None:
        self.queue_specs[queue.name.lower()] = queue
        store = self._store(queue.name, queue, self._on_dead_letter)
        self._send[queue.name.lower()] = SendEntity(
            name=queue.name,
            duplicates=_detector(queue),
            default_ttl=float(iso_duration_seconds(queue.default_message_time_to_live)),
            stores=[(lambda _facts: True, store)],
            is_queue=True,
        )

    def sender_entity(self, path: str) -> SendEntity | None:
        return self._send.get(path.lower())

    def receiver_store(self, path: str) -> MessageStore | None:
        return self._receive.get(path.lower())

    def stores(self) -> Iterator[MessageStore]:
        return iter(self._receive.values())

    def senders(self) -> Iterator[SendEntity]:
        return iter(self._send.values())


def _detector(spec: TopicSpec | QueueSpec) -> DuplicateDetector | None:
    if not spec.requires_duplicate_detection:
        return None
    return DuplicateDetector(
        float(iso_duration_seconds(spec.duplicate_detection_history_time_window))
    )
