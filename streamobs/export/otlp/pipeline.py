"""Wrappers around the SDK's OTLP exporters: count and log failures, add the server-side
histograms to each metrics export, and can be closed so that shutting down never waits for
a dead collector."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from streamobs import __version__
from streamobs.export.otlp.health import ExportHealth
from streamobs.export.otlp.snapshots import HistogramProducer

_SERVER_SCOPE = InstrumentationScope("streamobs.server", __version__)


class _Closable:
    def __init__(self, inner: MetricExporter | SpanExporter) -> None:
        self._inner = inner
        self._closed = threading.Event()
        self._close_lock = threading.Lock()

    def close(self) -> None:
        """Stop exporting: an export under way stops retrying, later ones fail at once."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._inner.shutdown()


class HealthMetricExporter(_Closable, MetricExporter):
    def __init__(
        self,
        inner: MetricExporter,
        health: ExportHealth,
        histograms: HistogramProducer,
        resource: Resource,
    ) -> None:
        _Closable.__init__(self, inner)
        # The reader takes temporality and aggregation from its exporter: keep the SDK's,
        # which follow OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE.
        MetricExporter.__init__(
            self,
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._metrics_inner = inner
        self._health = health
        self._histograms = histograms
        self._resource = resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._closed.is_set():
            return MetricExportResult.FAILURE
        error = None
        self._health.begin()
        try:
            data = self._with_server_histograms(metrics_data)
            result = self._metrics_inner.export(data, timeout_millis=timeout_millis)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            result = MetricExportResult.FAILURE
        # Closing cuts an export short: that is not the collector failing.
        ok = result is MetricExportResult.SUCCESS
        self._health.end("metrics", ok, error, report=not self._closed.is_set())
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._metrics_inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.close()

    def _with_server_histograms(self, data: MetricsData) -> MetricsData:
        metrics = self._histograms.metrics()
        if not metrics:
            return data
        scope = ScopeMetrics(scope=_SERVER_SCOPE, metrics=metrics, schema_url="")
        resources: Sequence[ResourceMetrics] = data.resource_metrics
        if not resources:
            return MetricsData([ResourceMetrics(self._resource, [scope], "")])
        first = resources[0]
        merged = ResourceMetrics(first.resource, [*first.scope_metrics, scope], first.schema_url)
        return MetricsData([merged, *resources[1:]])


class HealthSpanExporter(_Closable, SpanExporter):
    def __init__(self, inner: SpanExporter, health: ExportHealth) -> None:
        _Closable.__init__(self, inner)
        self._spans_inner = inner
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed.is_set():
            return SpanExportResult.FAILURE
        error = None
        self._health.begin()
        try:
            result = self._spans_inner.export(spans)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            result = SpanExportResult.FAILURE
        ok = result is SpanExportResult.SUCCESS
        self._health.end("traces", ok, error, report=not self._closed.is_set())
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._spans_inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.close()
