"""The proton reactor handler: AMQP links mapped onto the namespace's entities.

Runs on the broker thread only. Link kinds, by the address the client attaches to:

- ``$cbs`` both ways: claims-based security; every put-token is answered 200.
- ``<entity>/$management`` both ways: request/response operations (see ``management``).
- a client sender to a topic or queue: transfers are decoded, checked and published.
- a client receiver from a queue, ``<topic>/Subscriptions/<name>`` or their
  ``/$DeadLetterQueue``: messages are delivered with 16-byte lock-token tags.

Addresses may carry the ``amqps://host:port/`` prefix the SDK adds even without TLS.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlparse

from proton import (
    Condition,
    Delivery,
    Disposition,
    Endpoint,
    Handler,
    Link,
    Message,
    symbol,
    ulong,
)
from proton.reactor import Container

from .codec import DecodeError, decode_transfer, encode_delivery, plain
from .entities import MessageStore, Namespace, PublishRefusedError, SendEntity
from .faults import Faults, TransferFault
from .frames import SocketFilter
from .management import handle_management
from .stats import StatsRecorder

__all__ = ["BrokerHandler"]

_LOG = logging.getLogger(__name__)

SESSION_FILTER = symbol("com.microsoft:session-filter")
SESSION_LOCKED_UNTIL = symbol("com.microsoft:locked-until-utc")
MAX_BATCH_SIZE = symbol("com.microsoft:max-message-batch-size")
#: Milliseconds a NEXT_AVAILABLE_SESSION attach may wait for a session: the SDK sends its
#: receiver's ``max_wait_time`` here, a little shorter, so the service answers first
#: (azure-servicebus ``_transport/_pyamqp_transport.py``, ``create_receive_client``).
OPERATION_TIMEOUT = symbol("com.microsoft:timeout")
_DOTNET_EPOCH_TICKS = 621355968000000000  # 0001-01-01 to 1970-01-01 in 100 ns ticks
_CREDIT = 100
_TICK_SECONDS = 0.2
_SESSION_WAIT_SECONDS = 60.0  # Service Bus's default operation timeout, when none is sent
_NOT_FOUND = "amqp:not-found"
_ATTR = "sb_role"


def _path(address: str | None) -> str:
    if not address:
        return ""
    if "://" in address:
        return urlparse(address).path.lstrip("/")
    return address.lstrip("/")


def _session_wait_seconds(link: Link) -> float:
    """How long a next-available-session attach may wait: the client's timeout, if it sent one."""
    properties = link.remote_properties
    raw = properties.get(OPERATION_TIMEOUT) if isinstance(properties, dict) else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw / 1000.0
    return _SESSION_WAIT_SECONDS


def _filters(link: Link) -> dict[Any, Any]:
    data = link.remote_source.filter
    data.rewind()
    if data.next() is None:
        return {}
    value = data.get_object()
    return value if isinstance(value, dict) else {}


@dataclass
class _Receiver:
    """A client receiver: the broker sends it messages from one store."""

    owner: int
    connection: int
    link: Link
    store: MessageStore
    session_id: str | None
    delete_on_send: bool
    tags: itertools.count[int] = field(default_factory=itertools.count)


@dataclass
class _Role:
    kind: str  # cbs | cbs-reply | mgmt | mgmt-reply | send | receive
    connection: int
    entity: SendEntity | None = None
    store: MessageStore | None = None
    receiver: _Receiver | None = None
    missing: str | None = None


@dataclass
class _PendingSession:
    owner: int
    connection: int
    link: Link
    store: MessageStore
    deadline: float
    delete_on_send: bool


def _role(endpoint: Any) -> _Role | None:
    role = getattr(endpoint, _ATTR, None)
    return role if isinstance(role, _Role) else None


class _Timer(Handler):
    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self._callback = callback

    def on_timer_task(self, _event: Any) -> None:
        self._callback()


class BrokerHandler:
    """proton handler for every connection the broker accepts."""

    def __init__(
        self,
        namespace: Namespace,
        faults: Faults,
        stats: StatsRecorder,
        on_ready: Callable[[int], None],
        on_failure: Callable[[BaseException], None],
        port: int,
    ) -> None:
        self._namespace = namespace
        self._faults = faults
        self._stats = stats
        self._on_ready = on_ready
        self._on_failure = on_failure
        self._port = port
        self._container: Container | None = None
        self._acceptor: Any = None
        self._ids = itertools.count(1)
        self._receivers: dict[int, _Receiver] = {}
        self._pending: list[_PendingSession] = []
        self._connections: dict[int, Any] = {}
        self._reply_links: dict[int, list[tuple[str, str, Link]]] = {}
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def on_reactor_init(self, event: Any) -> None:
        self._container = event.container
        try:
            self._acceptor = event.container.listen(f"127.0.0.1:{self._port}")
            port = int(
                self._acceptor._selectable.getsockname()[1]
            )  # proton keeps the socket private
            self._port = port
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._on_failure(exc)
            event.container.stop()
            return
        event.container.schedule(_TICK_SECONDS, _Timer(self._tick))
        self._on_ready(port)

    def on_sb_stop(self, event: Any) -> None:
        self._stopping = True
        if self._acceptor is not None:
            self._acceptor.close()
        for connection in list(self._connections.values()):
            connection.close()
            transport = connection.transport
            if transport is not None:
                transport.close_tail()
                transport.close_head()
        event.container.stop()

    def on_sb_call(self, event: Any) -> None:
        """Run a function another thread handed in (``LocalServiceBus._call``)."""
        event.subject.run()
        self._serve_pending(time.time())
        self._pump_all()

    def _tick(self) -> None:
        if self._stopping or self._container is None:
            return
        now = time.time()
        try:
            for sender in self._namespace.senders():
                sender.release_due(now)
            for store in self._namespace.stores():
                store.expire_locks(now)
            self._serve_pending(now)
            self._pump_all()
        except Exception:  # noqa: BLE001 - one bad tick must not stop the reactor thread
            _LOG.exception("local Service Bus tick failed")
        self._container.schedule(_TICK_SECONDS, _Timer(self._tick))

    # ------------------------------------------------------------------ connections
    def on_connection_bound(self, event: Any) -> None:
        connection_id = next(self._ids)
        event.connection.sb_id = connection_id
        self._connections[connection_id] = event.connection
        self._reply_links[connection_id] = []
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        # proton keeps the accepted socket in the transport's selectable: read it through the
        # delivery-id filter (see ``frames``).
        selectable = getattr(event.transport, "_selectable", None)
        delegate = getattr(selectable, "_delegate", None)
        wrap = delegate is not None and not isinstance(delegate, SocketFilter)
        if selectable is not None and wrap:
            selectable._delegate = SocketFilter(delegate)
        self._stats.connection()

    def on_connection_remote_open(self, event: Any) -> None:
        if event.connection.state & Endpoint.LOCAL_UNINIT:
            event.connection.container = "local-servicebus"
            event.connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    def on_connection_remote_close(self, event: Any) -> None:
        self._forget_connection(event.connection)
        event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget_connection(event.connection)

    def _forget_connection(self, connection: Any) -> None:
        connection_id = getattr(connection, "sb_id", None)
        if connection_id is None or connection_id not in self._connections:
            return
        del self._connections[connection_id]
        self._reply_links.pop(connection_id, None)
        self._pending = [p for p in self._pending if p.connection != connection_id]
        for owner, receiver in list(self._receivers.items()):
            if receiver.connection == connection_id:
                del self._receivers[owner]
                receiver.store.release_owner(owner)
        self._serve_pending(time.time())
        self._pump_all()

    # ------------------------------------------------------------------ links
    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        connection_id = int(link.connection.sb_id)
        try:
            if link.is_receiver:
                self._attach_inbound(link, connection_id)
            else:
                self._attach_outbound(link, connection_id)
        except Exception as exc:  # noqa: BLE001 - refuse the link, keep the broker up
            _LOG.exception("local Service Bus attach failed")
            self._refuse(link, "amqp:internal-error", str(exc))

    def _echo_termini(self, link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)

    def _refuse(
        self, link: Link, condition: str, description: str, session: str | None = None
    ) -> None:
        self._echo_termini(link)
        if session is not None:
            # The SDK's attach callback for a session receiver reads the session filter and the
            # link properties of the attach reply, even one that is followed by a detach: give
            # it both (a string filter, a map) so it completes and the detach's error is raised.
            link.source.filter.clear()
            link.source.filter.put_object({SESSION_FILTER: session})
            link.properties = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
        link.open()
        link.condition = Condition(
            condition, description, {symbol("tracking-id"): str(uuid.uuid4())}
        )
        link.close()

    def _attach_inbound(self, link: Link, connection_id: int) -> None:
        """The client sends on this link: CBS or management requests, or messages."""
        address = _path(link.remote_target.address)
        lowered = address.lower()
        if lowered == "$cbs":
            role = _Role("cbs", connection_id)
        elif lowered.endswith("/$management"):
            entity_path = address[: -len("/$management")]
            role = _Role(
                "mgmt",
                connection_id,
                entity=self._namespace.sender_entity(entity_path),
                store=self._namespace.receiver_store(entity_path),
            )
        else:
            entity = self._namespace.sender_entity(address)
            # An unknown entity is refused on the first transfer, not on the attach: pyamqp
            # treats the attach reply as success and sends before it reads a following detach,
            # which would surface as a connection error instead of MessagingEntityNotFoundError.
            role = _Role("send", connection_id, entity=entity, missing=None if entity else address)
            link.max_message_size = self._namespace.max_message_size
            link.properties = {MAX_BATCH_SIZE: ulong(self._namespace.max_message_size)}
        link.sb_role = role
        self._echo_termini(link)
        link.open()
        link.flow(_CREDIT)

    def _not_found(self, address: str) -> str:
        return (
            f"The messaging entity 'sb://127.0.0.1:{self._port}/{address}' could not be found. "
            "To know more visit https://aka.ms/sbResourceMgrExceptions."
        )

    def _attach_outbound(self, link: Link, connection_id: int) -> None:
        """The client receives on this link: CBS or management replies, or messages."""
        address = _path(link.remote_source.address)
        lowered = address.lower()
        if lowered == "$cbs" or lowered.endswith("/$management"):
            kind = "cbs-reply" if lowered == "$cbs" else "mgmt-reply"
            link.sb_role = _Role(kind, connection_id)
            self._reply_links.setdefault(connection_id, []).append(
                (lowered, _path(link.remote_target.address).lower(), link)
            )
            self._echo_termini(link)
            link.open()
            return
        store = self._namespace.receiver_store(address)
        if store is None:
            self._refuse(link, _NOT_FOUND, self._not_found(address))
            return
        delete_on_send = link.remote_snd_settle_mode == Link.SND_SETTLED
        filters = _filters(link)
        wants_session = SESSION_FILTER in filters
        if store.requires_session and not wants_session:
            self._refuse(
                link,
                "amqp:not-allowed",
                "It is not possible for an entity that requires sessions to create a "
                "non-sessionful message receiver.",
            )
            return
        if wants_session and not store.requires_session:
            self._refuse(
                link,
                "amqp:not-allowed",
                "A sessionful message receiver cannot be created on an entity that does not "
                "require sessions.",
            )
            return
        owner = next(self._ids)
        if not wants_session:
            self._open_receiver(link, connection_id, owner, store, None, delete_on_send)
            return
        wanted = filters[SESSION_FILTER]
        wanted_id = None if wanted is None else str(wanted)
        now = time.time()
        session_id = store.acquire_session(owner, wanted_id, now)
        if session_id is not None:
            self._open_receiver(link, connection_id, owner, store, session_id, delete_on_send)
        elif wanted_id is not None:
            self._refuse(
                link,
                "com.microsoft:session-cannot-be-locked",
                f"The requested session '{wanted_id}' cannot be accepted. It may be locked by "
                "another receiver.",
                session=wanted_id,
            )
        else:
            wait = _session_wait_seconds(link)
            self._pending.append(
                _PendingSession(owner, connection_id, link, store, now + wait, delete_on_send)
            )
            if self._container is not None:
                # Answer at the client's deadline, not at the next tick after it.
                self._container.schedule(wait, _Timer(self._serve_pending_now))

    def _open_receiver(
        self,
        link: Link,
        connection_id: int,
        owner: int,
        store: MessageStore,
        session_id: str | None,
        delete_on_send: bool,
    ) -> None:
        receiver = _Receiver(owner, connection_id, link, store, session_id, delete_on_send)
        self._receivers[owner] = receiver
        link.sb_role = _Role("receive", connection_id, store=store, receiver=receiver)
        self._echo_termini(link)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if session_id is not None:
            link.source.filter.clear()
            link.source.filter.put_object({SESSION_FILTER: session_id})
            until = store.renew_session(session_id, time.time()) or time.time()
            ticks = _DOTNET_EPOCH_TICKS + int(until * 10_000_000)
            link.properties = {SESSION_LOCKED_UNTIL: ticks}
        link.open()
        self._pump(receiver)

    def _serve_pending_now(self) -> None:
        if not self._stopping:
            self._serve_pending(time.time())

    def _serve_pending(self, now: float) -> None:
        still: list[_PendingSession] = []
        for pending in self._pending:
            if pending.link.state & Endpoint.REMOTE_CLOSED:
                continue
            session_id = pending.store.acquire_session(pending.owner, None, now)
            if session_id is not None:
                self._open_receiver(
                    pending.link,
                    pending.connection,
                    pending.owner,
                    pending.store,
                    session_id,
                    pending.delete_on_send,
                )
            elif pending.deadline <= now:
                self._refuse(
                    pending.link, "com.microsoft:timeout", "No session was available.", session=""
                )
            else:
                still.append(pending)
        self._pending = still

    def on_link_remote_close(self, event: Any) -> None:
        link: Link = event.link
        role = _role(link)
        if role is not None and role.receiver is not None:
            receiver = role.receiver
            self._receivers.pop(receiver.owner, None)
            receiver.store.release_owner(receiver.owner)
            self._serve_pending(time.time())
            self._pump_all()
        self._pending = [p for p in self._pending if p.link != link]
        if link.state & Endpoint.LOCAL_ACTIVE or link.state & Endpoint.LOCAL_UNINIT:
            if link.state & Endpoint.LOCAL_UNINIT:
                self._echo_termini(link)
                link.open()
            link.close()

    def on_link_flow(self, event: Any) -> None:
        role = _role(event.link)
        if role is not None and role.receiver is not None:
            self._pump(role.receiver)

    # ------------------------------------------------------------------ deliveries
    def on_delivery(self, event: Any) -> None:
        link: Link = event.link
        role = _role(link)
        if role is None:
            return
        try:
            if link.is_receiver:
                self._inbound(event, link, role)
            elif role.receiver is not None:
                self._settled_by_client(event.delivery, role.receiver)
        except Exception:  # noqa: BLE001 - one bad delivery must not stop the reactor thread
            _LOG.exception("local Service Bus delivery failed")

    def _inbound(self, event: Any, link: Link, role: _Role) -> None:
        delivery: Delivery = event.delivery
        if delivery.partial or not delivery.readable:
            return
        raw = link.recv(delivery.pending) or b""
        link.advance()
        if link.credit < _CREDIT // 2:
            link.flow(_CREDIT - link.credit)
        if role.kind in ("cbs", "mgmt"):
            self._request(link, role, raw)
            delivery.update(Delivery.ACCEPTED)
            delivery.settle()
            return
        entity = role.entity
        if entity is None:
            if role.missing is not None:
                self._reject(delivery, _NOT_FOUND, self._not_found(role.missing))
            return
        self._stats.transfer(entity.name)
        decision = self._faults.take()
        if decision.fault is TransferFault.DROP_CONNECTION:
            self._stats.dropped_connection()
            transport = event.transport
            self._forget_connection(link.connection)
            transport.close_tail()
            transport.close_head()
            return
        if decision.delay_seconds > 0 and self._container is not None:
            self._container.schedule(
                decision.delay_seconds,
                _Timer(lambda: self._publish(delivery, entity, raw, decision.fault)),
            )
            return
        self._publish(delivery, entity, raw, decision.fault)

    def _publish(
        self, delivery: Delivery, entity: SendEntity, raw: bytes, fault: TransferFault
    ) -> None:
        if delivery.settled or delivery.link.state & Endpoint.LOCAL_CLOSED:
            return
        try:
            if fault is TransferFault.SERVER_BUSY:
                raise PublishRefusedError(
                    "com.microsoft:server-busy",
                    "The server is busy. Please retry the operation later (local fault).",
                )
            if len(raw) > self._namespace.max_message_size:
                raise PublishRefusedError(
                    "amqp:link:message-size-exceeded",
                    f"The received message (size {len(raw)} bytes) exceeds the limit "
                    f"({self._namespace.max_message_size} bytes) currently allowed on the link.",
                )
            try:
                messages = decode_transfer(raw)
            except (DecodeError, Exception) as exc:
                raise PublishRefusedError("amqp:decode-error", str(exc)) from exc
            result = entity.publish(messages, time.time())
        except PublishRefusedError as refused:
            self._stats.rejected(entity.name)
            self._reject(delivery, refused.condition, refused.description)
            return
        self._stats.accepted(entity.name, result.enqueued, result.duplicates)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        self._serve_pending(time.time())
        self._pump_all()

    @staticmethod
    def _reject(delivery: Delivery, condition: str, description: str) -> None:
        # The SDK (pyamqp 7.15) reads error[2] unguarded: without an info map it fails in a
        # callback and waits forever, so always send one, as Service Bus does.
        delivery.local.condition = Condition(
            condition, description, {symbol("tracking-id"): str(uuid.uuid4())}
        )
        delivery.update(Disposition.REJECTED)
        delivery.settle()

    def _pump_all(self) -> None:
        for receiver in list(self._receivers.values()):
            self._pump(receiver)

    def _pump(self, receiver: _Receiver) -> None:
        link = receiver.link
        if not link.state & Endpoint.LOCAL_ACTIVE or link.state & Endpoint.REMOTE_CLOSED:
            return
        now = time.time()
        while link.credit > 0:
            message = receiver.store.take(receiver.session_id, now)
            if message is None:
                break
            if receiver.delete_on_send:
                token = uuid.UUID(int=next(receiver.tags))
                locked_until = None
            else:
                lock = receiver.store.lock(message, receiver.owner, receiver.session_id, now)
                token, locked_until = lock.token, lock.locked_until
            encoded = encode_delivery(
                message,
                locked_until=locked_until,
                delivery_count=message.delivery_count,
                lock_token=None if receiver.delete_on_send else token,
            )
            # proton annotates the tag as str but takes bytes; lock token = UUID(bytes_le=tag).
            # A pre-settled delivery (receive-and-delete) has no lock: Service Bus sends an
            # empty tag, which the SDK reads as no delivery tag.
            tag = b"" if receiver.delete_on_send else token.bytes_le
            delivery = link.delivery(cast(str, tag))
            delivery.sb_lock = token
            link.send(encoded)
            link.advance()
            if receiver.delete_on_send:
                delivery.settle()
        if link.drain_mode and link.credit > 0:
            link.drained()

    def _settled_by_client(self, delivery: Delivery, receiver: _Receiver) -> None:
        token = getattr(delivery, "sb_lock", None)
        state = delivery.remote_state
        if not isinstance(token, uuid.UUID) or delivery.settled or receiver.delete_on_send:
            return
        if state is None or state == 0:
            return
        store = receiver.store
        if state == Delivery.ACCEPTED:
            store.complete(token)
        elif state == Delivery.REJECTED:
            condition = delivery.remote.condition
            raw_info = condition.info if condition is not None else None
            info: dict[Any, Any] = dict(raw_info) if isinstance(raw_info, dict) else {}
            reason = info.get(symbol("DeadLetterReason"), info.get("DeadLetterReason"))
            text = info.get(
                symbol("DeadLetterErrorDescription"), info.get("DeadLetterErrorDescription")
            )
            store.dead_letter_locked(
                token, None if reason is None else str(reason), None if text is None else str(text)
            )
        elif state == Delivery.MODIFIED and delivery.remote.undeliverable:
            store.defer(token)
        elif state == Delivery.RELEASED:
            store.release(token)
        else:  # modified: the SDK's abandon
            store.abandon(token)
        delivery.update(state)
        delivery.settle()
        self._pump_all()

    # ------------------------------------------------------------------ request/response
    def _request(self, link: Link, role: _Role, raw: bytes) -> None:
        request = Message()
        request.decode(raw)
        request.body = plain(request.body)  # memoryviews die with proton's Data
        raw_properties: dict[Any, Any] = dict(request.properties or {})
        properties = {str(k): v for k, v in raw_properties.items()}
        if role.kind == "cbs":
            reply = Message(
                correlation_id=request.id,
                properties={"status-code": 200, "status-description": "OK"},
            )
            source = "$cbs"
        else:
            operation = str(properties.get("operation", ""))
            answer = handle_management(
                operation, request.body, role.store, time.time(), role.entity
            )
            reply_properties: dict[str, object] = {
                "statusCode": answer.status,
                "statusDescription": answer.description,
            }
            if answer.condition is not None:
                reply_properties["errorCondition"] = symbol(answer.condition)
            reply = Message(
                correlation_id=request.id, properties=reply_properties, body=answer.body
            )
            source = _path(link.remote_target.address).lower()
            self._pump_all()
        self._reply(role.connection, source, str(request.reply_to or ""), reply)

    def _reply(self, connection_id: int, source: str, reply_to: str, reply: Message) -> None:
        links = self._reply_links.get(connection_id, [])
        wanted = _path(reply_to).lower()
        chosen = next((lk for s, t, lk in links if wanted and t == wanted), None)
        if chosen is None:
            chosen = next((lk for s, _t, lk in links if s == source), None)
        if chosen is None:
            _LOG.warning("no reply link for %s on connection %s", source, connection_id)
            return
        delivery = chosen.delivery(str(next(self._ids)))
        chosen.send(reply.encode())
        chosen.advance()
        delivery.settle()
