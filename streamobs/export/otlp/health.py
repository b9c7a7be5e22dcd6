"""What the OTLP side reports about itself, on the Prometheus side: export failures per
signal and measurements dropped by the cardinality cap. Also keeps the log quiet: one line
when exporting starts failing and one when it works again, never one per attempt.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter

from streamobs.statelog import StateLog

log = logging.getLogger(__name__)

Signal = Literal["metrics", "traces"]
SIGNALS: tuple[Signal, ...] = ("metrics", "traces")
AttributeValue = str | bool | int | float
AttributeKey = tuple[tuple[str, AttributeValue], ...]

# The SDK's exporters log every failed attempt and every retry; BatchSpanProcessor logs a
# full queue. Their records are held back and the reason folded into our own line.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)


class OtlpSelfMetrics:
    """``streamobs_otlp_export_failures_total{signal}`` and
    ``streamobs_otlp_dropped_series_total{instrument}`` in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None, signals: Sequence[Signal]) -> None:
        self.export_failures = Counter(
            "streamobs_otlp_export_failures",
            "OTLP exports that failed (after the exporter's own retries), by signal.",
            ("signal",),
            registry=registry,
        )
        self.dropped_series = Counter(
            "streamobs_otlp_dropped_series",
            "Measurements not exported over OTLP because their instrument already has the "
            "maximum number of attribute sets.",
            ("instrument",),
            registry=registry,
        )
        for signal in signals:  # the signals exported, at 0 from the start
            self.export_failures.labels(signal)


def attribute_key(attributes: Mapping[str, AttributeValue]) -> AttributeKey:
    return tuple(sorted(attributes.items()))


class SeriesGuard:
    """At most ``limit`` attribute sets per instrument; the rest are dropped and counted.

    Remembers only admitted sets, so its memory is bounded by ``limit`` per instrument.
    """

    def __init__(self, limit: int, metrics: OtlpSelfMetrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self._lock = threading.Lock()
        self._seen: dict[str, set[AttributeKey]] = {}

    def admit(self, instrument: str, attributes: Mapping[str, AttributeValue]) -> bool:
        key = attribute_key(attributes)
        with self._lock:
            seen = self._seen.setdefault(instrument, set())
            if key in seen:
                return True
            if len(seen) < self._limit:
                seen.add(key)
                return True
        self._metrics.dropped_series.labels(instrument).inc()
        return False


class _HeldBack(threading.local):
    active = False
    first: str | None = None  # usually names the cause (refused, 503 ...)
    last: str | None = None  # usually says how the export ended (timeout, retries)

    def reason(self) -> str | None:
        if self.first and self.last and self.first != self.last:
            return f"{self.first}; finally: {self.last}"
        return self.last


class _SdkLogGate(logging.Filter):
    """Holds back the SDK's warnings raised inside one of our exports (same thread), keeping
    the first and last as the reason; outside our exports, a full span queue is let through
    once per outage."""

    def __init__(self) -> None:
        super().__init__()
        self.held = _HeldBack()
        self._states = StateLog(log)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self.held.active:
            message = _one_line(record.getMessage())
            self.held.first = self.held.first or message
            self.held.last = message
            return False
        if "Queue full" in str(record.msg):
            return self._states.changed("queue", "full")
        return True

    def recovered(self) -> None:
        self._states.changed("queue", "")


_gate = _SdkLogGate()
_gate_lock = threading.Lock()
_gate_installed = False


def install_log_gate() -> None:
    global _gate_installed
    with _gate_lock:
        if _gate_installed:
            return
        for name in _SDK_LOGGERS:
            # First, so the SDK's own duplicate filter cannot hide the reason from us.
            logging.getLogger(name).filters.insert(0, _gate)
        _gate_installed = True


class ExportHealth:
    """Counts failed exports and logs each change between working and failing once."""

    def __init__(self, metrics: OtlpSelfMetrics) -> None:
        self._metrics = metrics
        self._endpoints: dict[Signal, str] = {}
        self._states = StateLog(log)

    def watch(self, signal: Signal, endpoint: str) -> None:
        """Name the endpoint ``signal`` goes to, for the log lines."""
        self._endpoints[signal] = endpoint

    def begin(self) -> None:
        """Called on the exporting thread just before the SDK exporter runs."""
        _gate.held.active = True
        _gate.held.first = _gate.held.last = None

    def end(self, signal: Signal, ok: bool, error: str | None = None, report: bool = True) -> None:
        """Called on the exporting thread when the SDK exporter returned."""
        reason = error or _gate.held.reason() or "the exporter gave no reason"
        _gate.held.active = False
        _gate.held.first = _gate.held.last = None
        if not report:
            return
        if not ok:
            self._metrics.export_failures.labels(signal).inc()
        if ok and signal == "traces":
            _gate.recovered()
        if not self._states.changed(signal, "" if ok else "failing"):
            return
        where = self._endpoints.get(signal, "?")
        if ok:
            log.info("OTLP %s export to %s works again", signal, where)
        else:
            log.warning(
                "OTLP %s export to %s failing (counted in streamobs_otlp_export_failures_total; "
                "logged again when it recovers): %s",
                signal,
                where,
                reason,
            )


def _one_line(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= 300 else line[:297] + "..."
