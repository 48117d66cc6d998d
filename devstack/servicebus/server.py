"""``LocalServiceBus``: the broker's reactor on a background thread, started and stopped cleanly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from proton.reactor import ApplicationEvent, Container, EventInjector

from events.deployment.topology import DEFAULT_TOPOLOGY, Topology, load_topology

from .admin import AdminServer
from .broker import BrokerHandler
from .entities import Namespace
from .errors import BrokerStartError
from .faults import Faults
from .stats import BrokerStats, StatsRecorder

__all__ = ["LocalServiceBus"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_CALL_TIMEOUT = 10.0
_CONNECTION_STRING = (
    "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
)
T = TypeVar("T")


class _Call:
    """A function to run on the reactor thread, and its result."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
            self.error = exc
        finally:
            self.done.set()


class LocalServiceBus:
    """A local AMQP 1.0 broker the real ``azure-servicebus`` SDK can use, on 127.0.0.1.

    >>> with LocalServiceBus() as bus:                       # doctest: +SKIP
    ...     client = ServiceBusClient.from_connection_string(bus.connection_string)
    """

    def __init__(
        self,
        topology: Path | Topology | None = None,
        port: int = 0,
        faults: Faults | None = None,
        admin_port: int = 0,
    ) -> None:
        if topology is None:
            topology = DEFAULT_TOPOLOGY
        self._topology = topology if isinstance(topology, Topology) else load_topology(topology)
        self._requested_port = port
        self._requested_admin_port = admin_port
        self._faults = faults if faults is not None else Faults()
        self._stats = StatsRecorder()
        # Built here so an unsupported rule fails the constructor, before any thread starts.
        self._namespace = Namespace(self._topology, on_dead_letter=self._stats.dead_lettered)
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._injector: EventInjector | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._admin: AdminServer | None = None

    # ------------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker is not started")
        return self._port

    @property
    def connection_string(self) -> str:
        """For ``ServiceBusClient.from_connection_string`` (AMQP)."""
        return _CONNECTION_STRING.format(port=self.port)

    @property
    def admin_port(self) -> int:
        """The HTTPS port of the administration endpoint (``ServiceBusAdministrationClient``)."""
        if self._admin is None:
            raise RuntimeError("the broker is not started")
        return self._admin.port

    @property
    def admin_connection_string(self) -> str:
        """For ``ServiceBusAdministrationClient.from_connection_string(...,
        connection_verify=False)``: the same namespace, its HTTPS management port."""
        return _CONNECTION_STRING.format(port=self.admin_port)

    @property
    def stats(self) -> BrokerStats:
        return self._stats.snapshot()

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalServiceBus:
        if self._thread is not None:
            raise RuntimeError("the broker is already started")
        handler = BrokerHandler(
            self._namespace,
            self._faults,
            self._stats,
            on_ready=self._started,
            on_failure=self._failed,
            port=self._requested_port,
        )
        container = Container(handler)
        self._injector = EventInjector()
        container.selectable(self._injector)
        self._thread = threading.Thread(
            target=self._run, args=(container,), name="local-servicebus", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.stop()
            raise BrokerStartError("the local Service Bus broker did not start in time")
        if self._failure is not None:
            self.stop()
            raise BrokerStartError(
                f"the local Service Bus broker could not listen: {self._failure}"
            ) from self._failure
        admin = AdminServer(
            self._namespace,
            self._call,
            self._topology.service_bus.max_message_size_kb,
            self._requested_admin_port,
        )
        try:
            admin.start()
        except OSError as exc:
            self.stop()
            raise BrokerStartError(f"the administration endpoint could not listen: {exc}") from exc
        self._admin = admin
        return self

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the reactor thread (entities are only touched there)."""
        injector = self._injector
        if injector is None or not self.running:
            raise RuntimeError("the broker is not running")
        call = _Call(function)
        injector.trigger(ApplicationEvent("sb_call", subject=call))
        if not call.done.wait(_CALL_TIMEOUT):
            raise TimeoutError("the broker thread did not answer in time")
        if call.error is not None:
            raise call.error
        result: T = call.result
        return result

    def _run(self, container: Container) -> None:
        try:
            container.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._failure = exc
        finally:
            self._ready.set()

    def _started(self, port: int) -> None:
        self._port = port
        self._ready.set()

    def _failed(self, exc: BaseException) -> None:
        self._failure = exc
        self._ready.set()

    def stop(self) -> None:
        """Close every connection and the listener, and wait for the thread to end."""
        if self._admin is not None:
            self._admin.stop()
            self._admin = None
        thread, injector = self._thread, self._injector
        if thread is None or injector is None:
            return
        if thread.is_alive():
            injector.trigger(ApplicationEvent("sb_stop"))
            injector.close()
            thread.join(_STOP_TIMEOUT)
        self._thread = None
        self._injector = None
        if thread.is_alive():
            raise RuntimeError("the local Service Bus broker thread did not stop")

    def __enter__(self) -> LocalServiceBus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
