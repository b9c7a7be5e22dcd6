"""OTLP export (gRPC or HTTP/protobuf) of what streamobs measures, beside Prometheus.

The same ProbeResult records that feed ``/metrics`` are recorded here once more (no second
measurement), under the OpenTelemetry GenAI semantic-convention names where they exist and
``streamobs.*`` otherwise; collector snapshots are read by observable instruments. The SDK's
periodic reader and batch span processor export on their own threads, so recording never
waits for the network; each export is bounded by the exporter timeout, the span queue is
bounded, and attribute sets are capped per instrument. Failures are counted in
``streamobs_otlp_export_failures_total{signal}`` and logged once per change of state.

Wiring: build one ``OtlpExporter`` per runtime, call ``record_probe`` for every result and
``record_server_timing`` for every probe joined to its own server span, hand it the
collectors' snapshot sources with ``observe_*``, and ``shutdown`` it when done.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

from streamobs import __version__
from streamobs.export.otlp import names as n
from streamobs.export.otlp.gpu import GPU_SERIES, GpuSnapshotSource, gpu_series
from streamobs.export.otlp.health import (
    SIGNALS,
    ExportHealth,
    OtlpSelfMetrics,
    SeriesGuard,
    Signal,
    install_log_gate,
)
from streamobs.export.otlp.pipeline import HealthMetricExporter, HealthSpanExporter
from streamobs.export.otlp.probe import ProbeInstruments
from streamobs.export.otlp.server_timing import ServerTimingInstruments, server_timing_boundaries
from streamobs.export.otlp.settings import (
    OtlpSettings,
    OtlpSettingsError,
    build_resource,
    export_enabled,
    protocol_for,
    signal_enabled,
)
from streamobs.export.otlp.snapshots import (
    HistogramProducer,
    HistogramSource,
    ObservedSeries,
    SeriesSource,
    SeriesSpec,
    SeriesValue,
)
from streamobs.export.otlp.spans import record_span
from streamobs.export.otlp.transport import endpoint_of, metric_exporter, span_exporter
from streamobs.export.otlp.vllm import VLLM_SERIES, SnapshotSource, vllm_histograms, vllm_series
from streamobs.overhead import OverheadTracker
from streamobs.probe.result import ProbeResult
from streamobs.statelog import StateLog
from streamobs.targets import TargetConfig
from streamobs.traces.records import ServerTiming

__all__ = ["OtlpExporter", "OtlpSettings", "OtlpSettingsError", "histogram_boundaries"]

log = logging.getLogger(__name__)

_OVERHEAD = SeriesSpec(
    n.PROBE_TTFT_OVERHEAD,
    "gauge",
    n.SECONDS,
    "Approximation: mean client TTFT of successful probes minus vLLM's mean TTFT over a "
    "scrape window, other users' requests included.",
)
_INSTRUMENT_CLASSES = (
    Counter,
    UpDownCounter,
    Histogram,
    ObservableCounter,
    ObservableUpDownCounter,
    ObservableGauge,
)


def histogram_boundaries(
    targets: Sequence[TargetConfig], buckets: Mapping[str, tuple[float, ...]]
) -> dict[str, tuple[float, ...]]:
    """Bucket edges per histogram: the convention's for the GenAI names plus every SLO
    threshold that applies (so ``le=<threshold>`` exists), and for ``streamobs.*`` exactly
    the edges of the matching Prometheus histogram (``buckets``, thresholds included; the
    per-probe server timing's as ``streamobs_probe_server_*_seconds`` has them)."""
    ttft = {slo.ttft_seconds for t in targets for slo in t.slos()}
    tpot = {slo.tpot_seconds for t in targets for slo in t.slos()}
    return {
        n.OPERATION_DURATION: n.DURATION_BOUNDARIES,
        n.TIME_TO_FIRST_CHUNK: tuple(sorted({*n.DURATION_BOUNDARIES, *ttft})),
        # One chunk per token on vLLM: a TPOT threshold is also the per-chunk threshold.
        n.TIME_PER_OUTPUT_CHUNK: tuple(sorted({*n.DURATION_BOUNDARIES, *tpot})),
        n.TOKEN_USAGE: n.TOKEN_BOUNDARIES,
        n.PROBE_TPOT: buckets["tpot"],
        n.PROBE_HEADERS: buckets["headers"],
        **server_timing_boundaries(buckets),
    }


def enabled_signals(settings: OtlpSettings) -> list[Signal]:
    """The signals ``settings`` export (none while export is off)."""
    if not export_enabled(settings):
        return []
    return [s for s in SIGNALS if signal_enabled(settings, s)]


def _span_batch_size(queue_size: int | None) -> int | None:
    """None (the SDK's choice) unless a small queue needs a batch no larger than itself."""
    if queue_size is None:
        return None
    default = os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "")
    batch = int(default) if default.strip().isdigit() else 512
    return min(batch, queue_size)


class OtlpExporter:
    """OTLP export for one configuration. With export disabled every method does nothing."""

    def __init__(
        self,
        settings: OtlpSettings,
        targets: Sequence[TargetConfig],
        buckets: Mapping[str, tuple[float, ...]],
        registry: CollectorRegistry | None = None,
        self_metrics: OtlpSelfMetrics | None = None,
    ) -> None:
        """``buckets``: the Prometheus histograms' edges. ``streamobs_otlp_*`` go to
        ``self_metrics`` when given (they outlive one exporter), else to ``registry``.
        Raises OtlpSettingsError for a setting or ``OTEL_*`` variable that cannot work."""
        self.settings = settings
        self.enabled = export_enabled(settings)
        signals: list[Signal] = []
        if self.enabled:
            signals = enabled_signals(settings)
        # Nothing on /metrics about OTLP while it is off.
        if self_metrics is None:
            self_metrics = OtlpSelfMetrics(registry if self.enabled else None, signals)
        self.self_metrics = self_metrics
        self._guard = SeriesGuard(settings.max_series_per_instrument, self.self_metrics)
        self._histograms = HistogramProducer(self._guard)
        self._states = StateLog(log)
        self._meter_provider: MeterProvider | None = None
        self._observed: ObservedSeries | None = None
        self._metric_exporter: HealthMetricExporter | None = None
        self._probes: ProbeInstruments | None = None
        self._server_timing: ServerTimingInstruments | None = None
        self._tracer_provider: TracerProvider | None = None
        self._span_exporter: HealthSpanExporter | None = None
        self._tracer: Tracer | None = None
        if not self.enabled:
            return
        install_log_gate()
        resource = build_resource(settings)
        health = ExportHealth(self.self_metrics)
        if "metrics" in signals:
            self._start_metrics(targets, buckets, resource, health)
        if "traces" in signals:
            self._start_traces(resource, health)

    def _start_metrics(
        self,
        targets: Sequence[TargetConfig],
        buckets: Mapping[str, tuple[float, ...]],
        resource: Resource,
        health: ExportHealth,
    ) -> None:
        settings = self.settings
        inner = metric_exporter(settings, protocol_for(settings, "metrics"))
        health.watch("metrics", endpoint_of(inner))
        self._metric_exporter = HealthMetricExporter(inner, health, self._histograms, resource)
        interval = settings.export_interval
        reader = PeriodicExportingMetricReader(
            self._metric_exporter,
            export_interval_millis=None if interval is None else interval * 1000,
            # Our cap counts what it drops; keep the SDK's own overflow out of its way.
            cardinality_limits={
                cls: settings.max_series_per_instrument + 1 for cls in _INSTRUMENT_CLASSES
            },
        )
        views = [
            View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(edges))
            for name, edges in histogram_boundaries(targets, buckets).items()
        ]
        self._meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, views=views, shutdown_on_exit=False
        )
        meter = self._meter_provider.get_meter("streamobs", __version__)
        self._observed = ObservedSeries(meter, self._guard)
        self._probes = ProbeInstruments(
            meter, self._observed, self._guard, settings.provider_name, targets
        )
        # Recorded only while the trace receiver joins probes to their spans.
        self._server_timing = ServerTimingInstruments(meter, self._guard)

    def _start_traces(self, resource: Resource, health: ExportHealth) -> None:
        settings = self.settings
        inner = span_exporter(settings, protocol_for(settings, "traces"))
        health.watch("traces", endpoint_of(inner))
        self._span_exporter = HealthSpanExporter(inner, health)
        self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        # Spans wait in a bounded queue (dropped when full) for the processor's own thread.
        self._tracer_provider.add_span_processor(
            BatchSpanProcessor(
                self._span_exporter,
                max_queue_size=settings.span_queue_size,
                max_export_batch_size=_span_batch_size(settings.span_queue_size),
            )
        )
        self._tracer = self._tracer_provider.get_tracer("streamobs", __version__)

    @property
    def signals(self) -> tuple[Signal, ...]:
        on: list[Signal] = []
        if self._meter_provider is not None:
            on.append("metrics")
        if self._tracer_provider is not None:
            on.append("traces")
        return tuple(on)

    # -- recording --------------------------------------------------------------------
    def record_probe(self, target: TargetConfig, result: ProbeResult) -> None:
        """Record one finished probe. Never raises and never waits for the network."""
        if not self.enabled:
            return
        try:
            if self._probes is not None:
                self._probes.record(target, result)
            if self._tracer is not None:
                record_span(self._tracer, self.settings.provider_name, target, result)
        except Exception as exc:  # a bug here must not stop the probes
            self._note_record_error(f"{type(exc).__name__}: {exc}")
            return
        self._note_record_error(None)

    def record_server_timing(
        self, target: TargetConfig, result: ProbeResult, timing: ServerTiming
    ) -> None:
        """Record one probe's own server timing (``result`` as given to ``record_probe``).
        Never raises and never waits for the network."""
        if not self.enabled or self._server_timing is None:
            return
        try:
            self._server_timing.record(target, result, timing)
        except Exception as exc:  # a bug here must not stop the trace receiver
            self._note_record_error(f"{type(exc).__name__}: {exc}")
            return
        self._note_record_error(None)

    def observe_series(self, specs: Sequence[SeriesSpec], source: SeriesSource) -> None:
        """Observable instruments for ``specs``, read from ``source`` at each export (on the
        reader's thread: the source must only read snapshots already in memory)."""
        if self._observed is not None:
            self._observed.add(specs, source)

    def observe_histograms(self, source: HistogramSource) -> None:
        """Server-side cumulative histograms added to each metrics export."""
        if self._meter_provider is not None:
            self._histograms.add(source)

    def observe_vllm(
        self, latest: SnapshotSource, targets: Sequence[str] | Mapping[str, str | None]
    ) -> None:
        """The engines' normalised series from ``latest()`` (e.g. ``EnginePoller.latest``);
        ``targets``: the configured engines, with their configured kinds where known."""
        self.observe_series(VLLM_SERIES, vllm_series(latest, targets))
        self.observe_histograms(vllm_histograms(latest))

    def observe_gpu(self, latest: GpuSnapshotSource) -> None:
        """GPU series (``hw.*`` where defined) from ``latest()`` (``GpuSampler.latest``)."""
        self.observe_series(GPU_SERIES, gpu_series(latest))

    def observe_overhead(self, tracker: OverheadTracker) -> None:
        """Client-minus-server TTFT, as ``streamobs_probe_ttft_overhead_seconds``."""

        def read() -> Iterator[SeriesValue]:
            for family in tracker.collect():
                for sample in family.samples:
                    attributes = {
                        n.TARGET: sample.labels["target"],
                        n.REQUEST_MODEL: sample.labels["model"],
                    }
                    yield SeriesValue(n.PROBE_TTFT_OVERHEAD, attributes, sample.value)

        self.observe_series([_OVERHEAD], read)

    # -- lifecycle --------------------------------------------------------------------
    def force_flush(self, timeout: float = 10.0) -> bool:
        """Export now and wait up to ``timeout`` seconds per signal."""
        ok = True
        if self._meter_provider is not None:
            ok = self._meter_provider.force_flush(timeout_millis=timeout * 1000) and ok
        if self._tracer_provider is not None:
            ok = self._tracer_provider.force_flush(timeout_millis=int(timeout * 1000)) and ok
        return ok

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush what is pending for up to half of ``timeout``, then stop; returns within
        about ``timeout`` seconds even when the collector never answers."""
        if not self.enabled:
            return
        self.enabled = False  # results still arriving are not recorded any more
        deadline = time.monotonic() + timeout
        flusher = threading.Thread(
            target=self._final_flush, args=(timeout / 2,), name="otlp-flush", daemon=True
        )
        flusher.start()
        flusher.join(timeout / 2)
        for exporter in (self._metric_exporter, self._span_exporter):
            if exporter is not None:
                exporter.close()  # cuts off an export still waiting for the collector
        remaining_ms = max(deadline - time.monotonic(), 0.1) * 1000
        if self._meter_provider is not None:
            self._meter_provider.shutdown(timeout_millis=remaining_ms)
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()

    def _final_flush(self, timeout: float) -> None:
        try:
            self.force_flush(timeout)
        except Exception as exc:
            log.debug("final OTLP flush failed: %r", exc)

    def _note_record_error(self, error: str | None) -> None:
        if not self._states.changed("record", error or ""):
            return
        if error is None:
            log.info("recording probe results for OTLP works again")
        else:
            log.error("cannot record a probe result for OTLP (logged once): %s", error)
