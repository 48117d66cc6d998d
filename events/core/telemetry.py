"""Traces and metrics of the relay and the consumer helper, through the OpenTelemetry API only.

The API does nothing until a host installs an SDK (``events.hosts.telemetry``): without one,
every span here is a non-recording no-op and every instrument drops its measurements, so the
package works, and costs next to nothing, in an application that never configures telemetry.

Span shapes (docs/observability.md):

- ``relay <feed>`` (CONSUMER): one per change-feed batch. A batch mixes events of many writers,
  so it is not a child of any of them: it carries a *link* to each distinct writer context
  (the event's ``traceparent``).
- ``send <destination>`` (PRODUCER): one per Service Bus send (a batch transfer, or a lone
  message), a child of the batch span, linked to the writer context of each event it carries.
- ``process <consumer>`` (CONSUMER): the idempotent consumer's handler call, a CHILD of the
  event's ``traceparent``: the application's write, and what consumers do with the event, are
  one trace.

The message itself carries the writer's ``traceparent`` (the CloudEvents extension and the
``Diagnostic-Id`` property); the relay never replaces it with its own context.

Attributes follow the OpenTelemetry messaging semantic conventions
(https://opentelemetry.io/docs/specs/semconv/messaging/) and hold ids, names and counts, never
a document or event body.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.core.envelope import IntegrationEvent
from events.core.messages import CLOUDEVENTS_PREFIX, OutgoingMessage

__all__ = [
    "INSTRUMENTATION_NAME",
    "METRIC_BATCH_DURATION",
    "METRIC_PUBLISHED",
    "METRIC_QUARANTINED",
    "METRIC_SENDS",
    "BatchSpan",
    "consume_span",
    "current_traceparent",
    "instrument",
    "link_writers",
    "relay_batch",
    "send_span",
]

#: The instrumentation scope of every tracer and meter of the package.
INSTRUMENTATION_NAME: Final = "events"
METRIC_PUBLISHED: Final = "events.relay.published"
METRIC_QUARANTINED: Final = "events.relay.quarantined"
METRIC_SENDS: Final = "events.relay.sends"
METRIC_BATCH_DURATION: Final = "events.relay.batch.duration"

#: Attribute names: semantic conventions where one exists, ``events.*`` for the relay's own.
FEED: Final = "events.feed"
CONTAINER: Final = "db.collection.name"
DOCUMENTS: Final = "events.batch.documents"
PUBLISHED: Final = "events.batch.published"
QUARANTINED: Final = "events.batch.quarantined"
SKIPPED: Final = "events.batch.skipped"
SENDS: Final = "events.batch.sends"
ERROR_TYPE: Final = "error.type"
SYSTEM: Final = "messaging.system"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
DESTINATION: Final = "messaging.destination.name"
BATCH_COUNT: Final = "messaging.batch.message_count"
MESSAGE_ID: Final = "messaging.message.id"
CONVERSATION_ID: Final = "messaging.message.conversation_id"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
EVENT_ID: Final = "cloudevents.event_id"
EVENT_TYPE: Final = "cloudevents.event_type"
EVENT_SOURCE: Final = "cloudevents.event_source"

_SERVICEBUS: Final = "servicebus"
_TRACEPARENT: Final = "traceparent"
_TRACEPARENT_PROPERTY: Final = f"{CLOUDEVENTS_PREFIX}{_TRACEPARENT}"
#: Explicit W3C trace context: the field is a ``traceparent`` whatever propagators the
#: application installed globally.
_W3C: Final = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class _Instruments:
    tracer: trace.Tracer
    published: metrics.Counter
    quarantined: metrics.Counter
    sends: metrics.Counter
    batch_duration: metrics.Histogram


def _instruments(
    tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
) -> _Instruments:
    # Without a provider these are the API's proxies: they start recording once a host sets
    # the global providers, whenever that happens.
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
    meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
    return _Instruments(
        tracer=tracer,
        published=meter.create_counter(
            METRIC_PUBLISHED, unit="{event}", description="Events published to Service Bus"
        ),
        quarantined=meter.create_counter(
            METRIC_QUARANTINED,
            unit="{document}",
            description="Documents written to the quarantine instead of being published",
        ),
        sends=meter.create_counter(
            METRIC_SENDS, unit="{send}", description="Service Bus sends (batch transfers)"
        ),
        batch_duration=meter.create_histogram(
            METRIC_BATCH_DURATION,
            unit="s",
            description="Time to relay one change-feed batch, failed attempts included",
        ),
    )


_active = _instruments(None, None)


def instrument(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Use these providers instead of the global ones (tests; an application that keeps its
    providers out of the globals). ``instrument()`` goes back to the globals."""
    global _active  # noqa: PLW0603 - one set of instruments per process, swapped as a whole
    _active = _instruments(tracer_provider, meter_provider)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the caller's current span, or None when there is none (no
    span, or telemetry not configured)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get(_TRACEPARENT)


@functools.lru_cache(maxsize=4096)
def _writer_context(traceparent: str) -> trace.SpanContext | None:
    """The remote span context of a W3C ``traceparent`` (None when invalid). Parsed directly
    (the envelope has checked its format) and cached: a batch and its sends link to the same
    writers, and parsing through the propagator cost a tenth of the relay's CPU
    (bench/relay_telemetry.py)."""
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 0xFF)
    )
    return context if context.is_valid else None


def _links(traceparents: Iterable[str | None]) -> list[Link]:
    """One link per distinct valid writer context, in first-seen order."""
    links: dict[str, Link] = {}
    for traceparent in traceparents:
        if traceparent is None or traceparent in links:
            continue
        context = _writer_context(traceparent)
        if context is not None:
            links[traceparent] = Link(context)
    return list(links.values())


def _traceparent_of(message: OutgoingMessage) -> str | None:
    return message.application_properties.get(_TRACEPARENT_PROPERTY)


def link_writers(messages: Iterable[OutgoingMessage], span: Span | None = None) -> None:
    """Link ``span`` (default: the current one, the batch span inside ``relay_batch``) to the
    writer context of each message. Nothing is parsed when the span does not record."""
    span = span if span is not None else trace.get_current_span()
    if not span.is_recording():
        return
    for link in _links(_traceparent_of(m) for m in messages):
        span.add_link(link.context)


@dataclass
class BatchSpan:
    """The batch being relayed: ``finished`` records what became of it."""

    span: Span
    feed: str

    def finished(self, *, published: int, quarantined: int, skipped: int, sends: int) -> None:
        active = _active
        attributes = {FEED: self.feed}
        active.published.add(published, attributes)
        active.quarantined.add(quarantined, attributes)
        active.sends.add(sends, attributes)
        if self.span.is_recording():
            self.span.set_attributes(
                {PUBLISHED: published, QUARANTINED: quarantined, SKIPPED: skipped, SENDS: sends}
            )


@contextmanager
def relay_batch(feed: str, container: str, documents: int) -> Iterator[BatchSpan]:
    """The span and duration of one batch. An exception (a transient error: the host retries
    the batch) marks the span failed with its type only (our messages name ids, a foreign one
    might hold a value) and is re-raised."""
    active = _active
    started = time.perf_counter()
    error: str | None = None
    with active.tracer.start_as_current_span(
        f"relay {feed}",
        kind=SpanKind.CONSUMER,
        attributes={FEED: feed, CONTAINER: container, DOCUMENTS: documents},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield BatchSpan(span, feed)
        except BaseException as exc:
            error = type(exc).__name__
            _failed(span, error)
            raise
        finally:
            attributes = {FEED: feed} if error is None else {FEED: feed, ERROR_TYPE: error}
            active.batch_duration.record(time.perf_counter() - started, attributes)


@contextmanager
def send_span(
    destination: str, messages: Iterable[OutgoingMessage], endpoint: str | None = None
) -> Iterator[Span]:
    """One Service Bus send of ``messages`` (in the order sent) to ``destination``."""
    active = _active
    sent = list(messages)
    # Inside a recording batch span, the send records too: its links are made up front, in
    # one go (adding them one by one to the started span costs a lock and a check each).
    links = _links(_traceparent_of(m) for m in sent) if _recording() else None
    with active.tracer.start_as_current_span(
        f"send {destination}",
        kind=SpanKind.PRODUCER,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            attributes: dict[str, str | int] = {
                SYSTEM: _SERVICEBUS,
                OPERATION_TYPE: "send",
                OPERATION_NAME: "send",
                DESTINATION: destination,
            }
            if len(sent) == 1:
                attributes[MESSAGE_ID] = sent[0].message_id
                attributes[CONVERSATION_ID] = sent[0].session_id
            else:
                attributes[BATCH_COUNT] = len(sent)
            attributes.update(_server(endpoint))
            span.set_attributes(attributes)
            if links is None:
                link_writers(sent, span)
        try:
            yield span
        except BaseException as exc:
            _failed(span, type(exc).__name__)
            raise


@contextmanager
def consume_span(consumer: str, event: IntegrationEvent) -> Iterator[Span]:
    """The consumer's handling of ``event``, continuing the writer's trace: the span's parent
    is the event's ``traceparent`` (the caller's current context when it has none)."""
    parent: Context | None = None
    if event.traceparent is not None:
        parent = _W3C.extract({_TRACEPARENT: event.traceparent})
    with _active.tracer.start_as_current_span(
        f"process {consumer}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            OPERATION_TYPE: "process",
            OPERATION_NAME: "process",
            CONSUMER_GROUP: consumer,
            MESSAGE_ID: event.id,
            EVENT_ID: event.id,
            EVENT_TYPE: event.type,
            EVENT_SOURCE: event.source,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # A handler's exception text is the application's: it may hold personal data.
            _failed(span, type(exc).__name__)
            raise


def _recording() -> bool:
    return trace.get_current_span().is_recording()


def _failed(span: Span, error_type: str) -> None:
    if span.is_recording():
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(StatusCode.ERROR, error_type)


def _server(endpoint: str | None) -> Mapping[str, str | int]:
    """``server.address`` and ``server.port`` from ``host:port``."""
    if not endpoint or endpoint.startswith("("):
        return {}
    host, _, port = endpoint.rpartition(":")
    if host and port.isdigit():
        return {SERVER_ADDRESS: host, SERVER_PORT: int(port)}
    return {SERVER_ADDRESS: endpoint}
