"""Probe results as Prometheus series. This module only reads ProbeResult records.

The series live as long as the process: ``configure()`` (at start and on every reload)
removes the series of targets that are gone and leaves every other target's counting on.
Last-value gauges (success, burst share, last run) appear with a target's first probe.

Latency histograms observe successful probes whose stamps are exact only; failures are
counted by outcome class, and probes whose own lateness could have moved a figure are
counted as degraded, apart. An SLO such as "99% of probes see TTFT under 2 s, failed
probes count as bad" is then ``ttft_bucket{le="2"} / latency_eligible_total`` (every
failed probe and every exact one), and every SLO threshold is a bucket edge.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamobs import __version__
from streamobs.export.prometheus.model_labels import model_label
from streamobs.probe.result import Degraded, Outcome, ProbeResult
from streamobs.targets import TargetConfig

log = logging.getLogger(__name__)

LABELS = ("target", "model")
CONNECTION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONNECTION_PHASES = ("dns", "connect", "tls")
DEGRADED_REASONS = tuple(reason.value for reason in Degraded)
FAILURE_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.OK)


class ProbeMetrics:
    """Owns the probe series in ``registry``; ``record()`` is called once per finished probe."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._targets: frozenset[str] = frozenset()
        self._models: dict[str, set[str]] = {}  # target -> model labels with series
        self.connection = Histogram(
            "streamobs_probe_connection_seconds",
            "Connection phases before the request: name resolution, TCP connect, TLS handshake.",
            (*LABELS, "phase"),
            registry=registry,
            buckets=CONNECTION_BUCKETS,
        )
        self.degraded = Counter(
            "streamobs_probe_degraded",
            "Probes whose own stamps could be off by more than the timing tolerance "
            "(streamobs was late to read: it needs CPU), by reason; kept out of the "
            "latency histograms and the latency SLOs.",
            (*LABELS, "reason"),
            registry=registry,
        )
        self.latency_eligible = Counter(
            "streamobs_probe_latency_eligible",
            "Probes that count for the latency SLOs: every failed probe and every "
            "successful probe with exact stamps.",
            LABELS,
            registry=registry,
        )
        self.attempts = Counter(
            "streamobs_probe_attempts", "Probes run.", LABELS, registry=registry
        )
        self.failures = Counter(
            "streamobs_probe_failures",
            "Failed probes by outcome class.",
            (*LABELS, "outcome"),
            registry=registry,
        )
        self.tokens = Counter(
            "streamobs_probe_output_tokens",
            "Output tokens received by successful probes.",
            LABELS,
            registry=registry,
        )
        self.buffered = Counter(
            "streamobs_probe_buffered",
            "Probes whose tokens arrived in bursts (a buffering proxy or compression).",
            LABELS,
            registry=registry,
        )
        self.success = Gauge(
            "streamobs_probe_success",
            "1 if the last probe succeeded.",
            LABELS,
            registry=registry,
        )
        self.burst_share = Gauge(
            "streamobs_probe_burst_share_ratio",
            "Share of the last probe's tokens that arrived in bursts.",
            LABELS,
            registry=registry,
        )
        self.last_run = Gauge(
            "streamobs_probe_last_run_timestamp_seconds",
            "Wall-clock start of the last probe.",
            LABELS,
            registry=registry,
        )
        self.slo_ttft = Gauge(
            "streamobs_slo_ttft_threshold_seconds",
            "Configured TTFT SLO threshold.",
            ("target",),
            registry=registry,
        )
        self.slo_tpot = Gauge(
            "streamobs_slo_tpot_threshold_seconds",
            "Configured TPOT SLO threshold.",
            ("target",),
            registry=registry,
        )
        self.slo_objective = Gauge(
            "streamobs_slo_objective_ratio",
            "Configured SLO objective (share of good probes).",
            ("target",),
            registry=registry,
        )
        Gauge("streamobs_build_info", "streamobs version.", ("version",), registry=registry).labels(
            __version__
        ).set(1)
        self.ttft: Histogram
        self.tpot: Histogram
        self.itl: Histogram
        self.e2e: Histogram
        self.headers: Histogram

    def configure(
        self, targets: Sequence[TargetConfig], buckets: Mapping[str, tuple[float, ...]]
    ) -> None:
        """Take the targets and histogram edges of a (re)loaded config: series of targets
        that are gone are removed, the others keep their values."""
        with self._lock:
            names = frozenset(t.name for t in targets)
            for gone in set(self._models) - names:
                self._remove_target(gone)
            self._targets = names
            if dict(buckets) != self._buckets:
                self._build_histograms(buckets)
            for gauge in (self.slo_ttft, self.slo_tpot, self.slo_objective):
                gauge.clear()
            for target in targets:
                self.slo_ttft.labels(target.name).set(target.slo.ttft_seconds)
                self.slo_tpot.labels(target.name).set(target.slo.tpot_seconds)
                self.slo_objective.labels(target.name).set(target.slo.objective)
                if target.model:
                    # A discovered model's children appear with its first probe (or as
                    # model="unknown" when discovery fails, so failures are still counted).
                    self._prepare(target.name, model_label(target.model))

    def _build_histograms(self, buckets: Mapping[str, tuple[float, ...]]) -> None:
        # Edges cannot change under a running histogram: new edges start new histograms.
        if self._buckets:
            log.info("histogram edges changed on reload: the latency histograms start over")
            for old in self._latency_histograms():
                self._registry.unregister(old)

        def histogram(name: str, doc: str, edges: str) -> Histogram:
            return Histogram(name, doc, LABELS, registry=self._registry, buckets=buckets[edges])

        self.ttft = histogram(
            "streamobs_probe_ttft_seconds",
            "Time to first token (first event with generated content) of successful probes.",
            "ttft",
        )
        self.tpot = histogram(
            "streamobs_probe_tpot_seconds",
            "Time per output token after the first, (last - first) / (tokens - 1), "
            "of successful probes.",
            "tpot",
        )
        self.itl = histogram(
            "streamobs_probe_itl_seconds",
            "Gaps between consecutive content events of successful probes.",
            "itl",
        )
        self.e2e = histogram(
            "streamobs_probe_e2e_seconds",
            "Request start to end of stream ([DONE]) of successful probes.",
            "e2e",
        )
        self.headers = histogram(
            "streamobs_probe_headers_seconds",
            "Request sent to response headers, every probe that got them with exact stamps.",
            "headers",
        )
        self._buckets = dict(buckets)
        for target, models in self._models.items():
            for model in models:
                for metric in self._latency_histograms():
                    metric.labels(target, model)

    def _latency_histograms(self) -> tuple[Histogram, ...]:
        return (self.ttft, self.tpot, self.itl, self.e2e, self.headers)

    def _counting(self) -> Iterable[Histogram | Counter]:
        """Series that exist from a target's start (at 0), so rate() sees the first probe."""
        return (
            *self._latency_histograms(),
            self.attempts,
            self.tokens,
            self.buffered,
            self.latency_eligible,
        )

    def _last_values(self) -> Iterable[Gauge]:
        return (self.success, self.burst_share, self.last_run)

    def _prepare(self, target: str, model: str) -> None:
        """Create every counting child, so a target that always fails has all its series."""
        models = self._models.setdefault(target, set())
        if model in models:
            return
        models.add(model)
        for metric in self._counting():
            metric.labels(target, model)
        for outcome in FAILURE_OUTCOMES:
            self.failures.labels(target, model, outcome)
        for reason in DEGRADED_REASONS:
            self.degraded.labels(target, model, reason)
        for phase in CONNECTION_PHASES:
            self.connection.labels(target, model, phase)

    def _remove_target(self, target: str) -> None:
        self._models.pop(target, None)
        every = (*self._counting(), *self._last_values(), self.failures, self.degraded)
        for metric in (*every, self.connection):
            metric.remove_by_labels({"target": target})

    def record(self, target: str, result: ProbeResult) -> None:
        with self._lock:
            # A probe that finished after its target left the config counts nowhere.
            if target not in self._targets:
                return
            self._prepare(target, result.model)
            self._record(target, result)

    def _record(self, target: str, result: ProbeResult) -> None:
        model = result.model
        labels = (target, model)
        self.attempts.labels(*labels).inc()
        self.last_run.labels(*labels).set(result.started_at)
        self.success.labels(*labels).set(1 if result.ok else 0)
        for phase, duration in (
            ("dns", result.dns_ns),
            ("connect", result.connect_ns),
            ("tls", result.tls_ns),
        ):
            if duration is not None:
                self.connection.labels(target, model, phase).observe(duration / 1e9)
        degraded = result.timing.degraded
        if degraded is not None:
            self.degraded.labels(target, model, degraded.value).inc()
        if not result.ok or degraded is None:
            self.latency_eligible.labels(*labels).inc()
        if result.headers_ns is not None and degraded is None:
            self.headers.labels(*labels).observe(result.headers_ns / 1e9)
        # No stream, no bursts: a failed connect must not keep the previous probe's share.
        delivery = result.delivery
        self.burst_share.labels(*labels).set(delivery.burst_share if delivery else 0.0)
        if delivery is not None and delivery.buffered:
            self.buffered.labels(*labels).inc()
        if not result.ok:
            self.failures.labels(target, model, result.outcome.value).inc()
            return
        if result.output_tokens:
            self.tokens.labels(*labels).inc(result.output_tokens)
        if degraded is not None:
            return
        if result.first_token_ns is not None:
            self.ttft.labels(*labels).observe(result.first_token_ns / 1e9)
        if result.tpot_ns is not None:
            self.tpot.labels(*labels).observe(result.tpot_ns / 1e9)
        if result.done_ns is not None:
            self.e2e.labels(*labels).observe(result.done_ns / 1e9)
        itl = self.itl.labels(*labels)
        for gap in result.itl_ns:
            itl.observe(gap / 1e9)
