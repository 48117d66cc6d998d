"""Install the OpenTelemetry SDK and an exporter as the process's global providers.

The package's spans and metrics go through the API (``events.core.telemetry``); this module,
called once per process by a host (``events.hosts.telemetry``), decides where they go:

- ``install_azure_monitor``: Application Insights through the Azure Monitor distro, signed in
  with an Entra ID credential (the app's managed identity; the component has local auth off).
- ``install_otlp``: OTLP over HTTP to a collector (the standard ``OTEL_EXPORTER_OTLP_*``
  variables configure the exporters).
- ``install_console``: one line per span and per metric point on stderr.

The SDK and the exporters are imported inside each function: a process that exports nothing
never loads them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "install_azure_monitor",
    "install_console",
    "install_otlp",
    "metric_lines",
    "span_line",
]

#: The distro's automatic instrumentations that stay off, and why (docs/observability.md):
#: the Azure SDKs' own tracing stamps a second ``traceparent`` (the relay's, not the writer's)
#: on every message and traces each message it encodes; the HTTP instrumentations would trace
#: every change-feed poll (one a second per feed range, mostly empty).
_AZURE_MONITOR_OFF: Final[Mapping[str, Mapping[str, bool]]] = {
    name: {"enabled": False}
    for name in ("azure_sdk", "requests", "urllib", "urllib3", "django", "fastapi", "flask")
}


def _resource(service_name: str) -> Resource:
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; the SDK's placeholder does not.
    detected = Resource.create()
    name = str(detected.attributes.get("service.name", ""))
    if name and not name.startswith("unknown_service"):
        return detected
    return detected.merge(Resource({"service.name": service_name}))


def install_azure_monitor(
    connection_string: str,
    credential: TokenCredential | None,
    *,
    service_name: str,
    sampling_ratio: float | None = 1.0,
    logger_name: str = "events",
) -> None:
    """Traces, metrics and the ``logger_name`` log records to Application Insights.

    ``sampling_ratio`` 1.0 keeps every trace: the relay makes one span per batch and per send,
    not per event, and the distro's default (at most 5 traces a second, rate limited) drops
    batches at random, the first ones of a process included. None leaves the choice to the
    distro (``OTEL_TRACES_SAMPLER``).
    """
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

    options: dict[str, object] = {}
    if sampling_ratio is not None:
        options["sampling_ratio"] = sampling_ratio
    configure_azure_monitor(
        connection_string=connection_string,
        credential=credential,
        resource=_resource(service_name),
        logger_name=logger_name,
        instrumentation_options=dict(_AZURE_MONITOR_OFF),
        **options,
    )


def _install(
    spans: SpanExporter,
    metrics: MetricExporter,
    service_name: str,
    metrics_interval: float | None,
) -> None:
    from opentelemetry import metrics as metrics_api  # noqa: PLC0415
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = _resource(service_name)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    # None: OTEL_METRIC_EXPORT_INTERVAL (milliseconds), else every 60 s.
    interval = None if metrics_interval is None else metrics_interval * 1000
    reader = PeriodicExportingMetricReader(metrics, export_interval_millis=interval)
    # Both providers flush and shut down at exit (atexit), so the last batch is exported.
    trace.set_tracer_provider(tracer_provider)
    metrics_api.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def install_otlp(*, service_name: str, metrics_interval: float | None = None) -> None:
    """OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` and ``/v1/metrics``)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    _install(OTLPSpanExporter(), OTLPMetricExporter(), service_name, metrics_interval)


def span_line(span: ReadableSpan) -> str:
    """One readable line per span: name, kind, ids, parent, links, duration, attributes."""
    context = span.context
    trace_id = f"{context.trace_id:032x}" if context else "-"
    span_id = f"{context.span_id:016x}" if context else "-"
    parent = f"{span.parent.span_id:016x}" if span.parent else "-"
    links = ",".join(f"{link.context.trace_id:032x}" for link in span.links) or "-"
    duration = (
        f"{(span.end_time - span.start_time) / 1e6:.1f}ms"
        if span.end_time is not None and span.start_time is not None
        else "-"
    )
    attributes = " ".join(f"{k}={v!s}" for k, v in (span.attributes or {}).items())
    status = span.status.status_code.name
    return (
        f"span {span.name!r} kind={span.kind.name} status={status} trace={trace_id} "
        f"span={span_id} parent={parent} links={links} duration={duration} {attributes}\n"
    )


def metric_lines(data: MetricsData) -> str:
    """One line per data point: name, attributes, then the sum (counters) or the count, sum
    and maximum (histograms), with the unit."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint  # noqa: PLC0415

    lines: list[str] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = ",".join(f"{k}={v!s}" for k, v in (point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        value = f"count={point.count} sum={point.sum:.6g} max={point.max:.6g}"
                    else:
                        value = f"value={getattr(point, 'value', '?')}"
                    lines.append(f"metric {metric.name}{{{labels}}} {value} unit={metric.unit}\n")
    return "".join(lines)


def install_console(
    *, service_name: str, metrics_interval: float | None = None, out: TextIO | None = None
) -> None:
    """Spans and metric points, one line each, on ``out`` (default stderr, next to the logs)."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

    stream = out if out is not None else sys.stderr
    _install(
        ConsoleSpanExporter(out=stream, formatter=span_line),
        ConsoleMetricExporter(out=stream, formatter=metric_lines),
        service_name,
        metrics_interval,
    )
