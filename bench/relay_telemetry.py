"""CPU per event of the relay with telemetry off (the OpenTelemetry API with no SDK: what a
process gets without ``RELAY_TELEMETRY``) vs. on (the SDK recording every span and metric,
spans handed to a batch processor whose exporter drops them).

Same workload and stand-in publisher as bench/relay_cpu.py (no network), cut into batches of
``--batch`` documents as the hosts deliver them (100 by default). Every document carries its
own writer ``traceparent``, so each batch span gets one link per document: the most the
telemetry can cost. Rounds alternate which side goes first; the median of the per-round
ratios on/off is printed (goal <= 1.10). ``off`` is the relay as it was before telemetry plus
no-op spans and instruments: their cost alone (a batch span, one send span and the counters,
timed in a loop) is printed as a share of the relay's CPU per batch (goal <= 0.01).

    python -m bench.relay_telemetry [--docs 2000] [--batch 100] [--rounds 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.relay_cpu import Workload, dropping_publisher, relays_for, workload
from events.core import telemetry
from events.core.messages import OutgoingMessage
from events.core.relay import Relay


class _DroppingExporter(SpanExporter):
    """Takes every span the batch processor hands over and drops it."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _cpu(relays: dict[str, Relay], work: Workload, batch: int) -> float:
    gc.collect()
    started = time.process_time()
    published = 0
    for feed, documents in work.documents.items():
        for start in range(0, len(documents), batch):
            published += relays[feed].process(documents[start : start + batch]).published
    spent = time.process_time() - started
    assert published == work.events, f"relay published {published} of {work.events}"
    return spent


def _noop_cost(messages: int) -> float:
    """CPU seconds of the no-op telemetry of one batch (what ``off`` adds to the relay)."""
    telemetry.instrument()
    sample: list[OutgoingMessage] = []
    loops = 2000
    started = time.process_time()
    for _ in range(loops):
        with telemetry.relay_batch("feed", "container", messages) as batch:
            telemetry.link_writers(sample)
            with telemetry.send_span("destination", sample):
                pass
            batch.finished(published=messages, quarantined=0, skipped=0, sends=1)
    return (time.process_time() - started) / loops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_telemetry")
    parser.add_argument("--docs", type=int, default=2000, help="documents per round")
    parser.add_argument("--batch", type=int, default=100, help="documents per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv or [])
    work = workload(args.docs, args.seed, "telemetry")
    relays = relays_for(dropping_publisher())
    exporter = _DroppingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def off() -> float:
        telemetry.instrument()  # the API's globals, which nothing sets here: no-ops
        return _cpu(relays, work, args.batch)

    def on() -> float:
        telemetry.instrument(tracer_provider, meter_provider)
        try:
            return _cpu(relays, work, args.batch)
        finally:
            telemetry.instrument()

    off()  # warm-up of both sides
    on()
    ratios: list[float] = []
    for number in range(args.rounds):
        if number % 2:
            without, with_ = off(), on()
        else:
            with_, without = on(), off()
        ratios.append(with_ / without)
        print(
            f"  round {number}: off {without / work.events * 1e6:.0f} us/event, "
            f"on {with_ / work.events * 1e6:.0f} us/event, ratio {ratios[-1]:.3f}"
        )
    tracer_provider.shutdown()
    meter_provider.shutdown()
    batches = sum(-(-len(d) // args.batch) for d in work.documents.values())
    noop = _noop_cost(args.batch)
    per_batch = statistics.median([off() for _ in range(3)]) / batches
    print(
        f"relay_telemetry_off no-op telemetry={noop * 1e6:.1f} us/batch, relay="
        f"{per_batch * 1e6:.0f} us/batch, share={noop / per_batch:.4f} (goal <= 0.01)"
    )
    print(
        f"relay_telemetry documents={args.docs} events={work.events} batch={args.batch} "
        f"rounds={args.rounds} spans exported={exporter.spans} "
        f"ratio on/off={statistics.median(ratios):.3f} (goal <= 1.10)"
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
