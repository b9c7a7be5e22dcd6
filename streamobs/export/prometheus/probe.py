"""Probe results as Prometheus series. This module only reads ProbeResult records.

The series live as long as the process: ``configure()`` (at start and on every reload)
removes the series of targets that are gone and leaves every other target's counting on.
Last-value gauges (success, burst share, last run) appear with a target's first probe.

Latency histograms observe successful probes whose stamps are exact only; failures are
counted by outcome class, and probes whose own lateness could have moved a figure are
counted as degraded, apart. An SLO such as "99% of probes see TTFT under 2 s, failed
probes count as bad" is then ``ttft_bucket{le="2"} / latency_eligible_total`` (every
failed probe and every exact one), and every SLO threshold is a bucket edge.

A thousand targets make a hundred thousand samples, so the per-target series are kept
here, not in prometheus_client metric objects: each (target, model) renders its own lines
once and keeps them until its next result (``render_text``), and ``collect()`` builds the
same families for anything that reads the registry the ordinary way.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from streamobs import __version__
from streamobs.export.prometheus.model_labels import model_label
from streamobs.export.prometheus.slo import SloGauges
from streamobs.export.prometheus.text import (
    created_series_enabled,
    header,
    histogram_lines,
    label_text,
    number,
    tune_allocator,
)
from streamobs.probe.result import Degraded, Outcome, ProbeResult
from streamobs.targets import TargetConfig

log = logging.getLogger(__name__)

LABELS = ("target", "model")
CONNECTION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONNECTION_PHASES = ("dns", "connect", "tls")
DEGRADED_REASONS = tuple(reason.value for reason in Degraded)
FAILURE_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.OK)


LATENCY_KINDS = ("ttft", "tpot", "itl", "e2e", "headers")


@dataclass(frozen=True, slots=True)
class _Family:
    name: str  # as exposed: counters end in _total
    documentation: str
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...] = LABELS

    def header(self) -> str:
        return header(self.name, self.documentation, self.kind)


CONNECTION = _Family(
    "streamobs_probe_connection_seconds",
    "Connection phases before the request: name resolution, TCP connect, TLS handshake.",
    "histogram",
    (*LABELS, "phase"),
)
DEGRADED = _Family(
    "streamobs_probe_degraded_total",
    "Probes whose own stamps could be off by more than the timing tolerance "
    "(streamobs was late to read: it needs CPU), by reason; kept out of the "
    "latency histograms and the latency SLOs.",
    "counter",
    (*LABELS, "reason"),
)
LATENCY_ELIGIBLE = _Family(
    "streamobs_probe_latency_eligible_total",
    "Probes that count for the latency SLOs: every failed probe and every "
    "successful probe with exact stamps.",
    "counter",
)
ATTEMPTS = _Family("streamobs_probe_attempts_total", "Probes run.", "counter")
FAILURES = _Family(
    "streamobs_probe_failures_total",
    "Failed probes by outcome class.",
    "counter",
    (*LABELS, "outcome"),
)
TOKENS = _Family(
    "streamobs_probe_output_tokens_total", "Output tokens received by successful probes.", "counter"
)
BUFFERED = _Family(
    "streamobs_probe_buffered_total",
    "Probes whose tokens arrived in bursts (a buffering proxy or compression).",
    "counter",
)
SUCCESS = _Family("streamobs_probe_success", "1 if the last probe succeeded.", "gauge")
BURST_SHARE = _Family(
    "streamobs_probe_burst_share_ratio",
    "Share of the last probe's tokens that arrived in bursts.",
    "gauge",
)
LAST_RUN = _Family(
    "streamobs_probe_last_run_timestamp_seconds", "Wall-clock start of the last probe.", "gauge"
)
# In the order the families are exposed: counting ones from a target's start, last values
# from its first probe; the latency histograms come later (registered when built).
COUNTING = (CONNECTION, DEGRADED, LATENCY_ELIGIBLE, ATTEMPTS, FAILURES, TOKENS, BUFFERED)
LAST_VALUES = (SUCCESS, BURST_SHARE, LAST_RUN)
LATENCY = {
    "ttft": _Family(
        "streamobs_probe_ttft_seconds",
        "Time to first token (first event with generated content) of successful probes.",
        "histogram",
    ),
    "tpot": _Family(
        "streamobs_probe_tpot_seconds",
        "Time per output token after the first, (last - first) / (tokens - 1), "
        "of successful probes.",
        "histogram",
    ),
    "itl": _Family(
        "streamobs_probe_itl_seconds",
        "Gaps between consecutive content events of successful probes.",
        "histogram",
    ),
    "e2e": _Family(
        "streamobs_probe_e2e_seconds",
        "Request start to end of stream ([DONE]) of successful probes.",
        "histogram",
    ),
    "headers": _Family(
        "streamobs_probe_headers_seconds",
        "Request sent to response headers, every probe that got them with exact stamps.",
        "histogram",
    ),
}


class _Histogram:
    __slots__ = ("counts", "created", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0.0] * size  # per bucket, not cumulative
        self.total = 0.0
        self.created = time.time()

    def observe(self, bounds: Sequence[float], value: float) -> None:
        self.total += value
        index = bisect.bisect_left(bounds, value)  # the first edge >= value
        if index < len(self.counts):
            self.counts[index] += 1


class _Series:
    """Everything one (target, model) counts, and its rendered lines until it changes."""

    __slots__ = (
        "attempts",
        "buffered",
        "connection",
        "created",
        "degraded",
        "eligible",
        "failures",
        "labels",
        "last",
        "latency",
        "model",
        "target",
        "text",
        "tokens",
    )

    def __init__(self, target: str, model: str, latency_edges: Mapping[str, int]) -> None:
        self.target, self.model = target, model
        self.labels = label_text((("target", target), ("model", model)))
        self.created = time.time()
        self.attempts = self.tokens = self.buffered = self.eligible = 0.0
        self.failures = dict.fromkeys(FAILURE_OUTCOMES, 0.0)
        self.degraded = dict.fromkeys(DEGRADED_REASONS, 0.0)
        self.connection = {p: _Histogram(len(CONNECTION_BOUNDS)) for p in CONNECTION_PHASES}
        self.latency = {kind: _Histogram(size) for kind, size in latency_edges.items()}
        self.last: tuple[float, float, float] | None = None  # success, burst share, run at
        self.text: tuple[str, ...] | None = None


def _bounds(edges: Sequence[float]) -> tuple[float, ...]:
    """Histogram edges as prometheus_client takes them: sorted, +Inf last."""
    bounds = [float(edge) for edge in edges]
    if bounds != sorted(bounds):
        raise ValueError("histogram edges not in sorted order")
    if not bounds or bounds[-1] != float("inf"):
        bounds.append(float("inf"))
    if len(bounds) < 2:
        raise ValueError("a histogram needs at least two buckets")
    return tuple(bounds)


CONNECTION_BOUNDS = _bounds(CONNECTION_BUCKETS)


class _Families:
    """One registered collector: a slice of ``ProbeMetrics``' families, in exposure order."""

    def __init__(self, owner: ProbeMetrics, part: str) -> None:
        self._owner = owner
        self._part = part

    def describe(self) -> list[Metric]:
        return [_empty(f) for f in self._owner.families(self._part)]

    def collect(self) -> Iterator[Metric]:
        return self._owner.collect(self._part)

    def render_text(self) -> str | None:
        return self._owner.render_text(self._part)


def _empty(family: _Family) -> Metric:
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.documentation, labels=family.labels)
    if family.kind == "histogram":
        return HistogramMetricFamily(family.name, family.documentation, labels=family.labels)
    return GaugeMetricFamily(family.name, family.documentation, labels=family.labels)


class ProbeMetrics:
    """Owns the probe series in ``registry``; ``record()`` is called once per finished probe."""

    def __init__(self, registry: CollectorRegistry) -> None:
        tune_allocator()  # before the daemon's threads: see text.py
        self._registry = registry
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}
        self._edges: dict[str, tuple[str, ...]] = {}
        self._targets: frozenset[str] = frozenset()
        # (target, model) -> its series, in the order they appeared (the exposure order).
        self._series: dict[tuple[str, str], _Series] = {}
        self._with_last: dict[tuple[str, str], None] = {}  # in the order of first results
        self._connection_edges = tuple(number(b) for b in CONNECTION_BOUNDS)
        self.renders = 0  # series (re)rendered as text, ever: the work /metrics does
        registry.register(_Families(self, "counting"))
        self._latency: _Families | None = None
        self.slos = SloGauges()  # streamobs_slo_*, per target (and model with its own)
        registry.register(self.slos)
        Gauge("streamobs_build_info", "streamobs version.", ("version",), registry=registry).labels(
            __version__
        ).set(1)

    def configure(
        self, targets: Sequence[TargetConfig], buckets: Mapping[str, tuple[float, ...]]
    ) -> None:
        """Take the targets and histogram edges of a (re)loaded config: series of targets
        that are gone are removed, the others keep their values."""
        with self._lock:
            names = frozenset(t.name for t in targets)
            for key in [k for k in self._series if k[0] not in names]:
                del self._series[key]
                self._with_last.pop(key, None)
            self._targets = names
            if dict(buckets) != self._buckets:
                self._build_histograms(buckets)
            self.slos.configure(targets)
            listed = {
                t.name: frozenset(model_label(m.name) for m in t.models)
                for t in targets
                if t.models
            }
            # A model taken out of a target's list goes like a removed target.
            for key in [k for k in self._series if k[1] not in listed.get(k[0], (k[1],))]:
                del self._series[key]
                self._with_last.pop(key, None)
            for target in targets:
                # A discovered model's children appear with its first probe (or as
                # model="unknown" when discovery fails, so failures are still counted).
                for model in target.models:
                    self._prepare(target.name, model_label(model.name))

    def forget_models(self, target: str, kept: Iterable[str]) -> None:
        """Remove the series of ``target``'s models but ``kept`` (labels): those the
        server no longer lists (``model: all``)."""
        kept = frozenset(kept)
        with self._lock:
            for key in [k for k in self._series if k[0] == target and k[1] not in kept]:
                del self._series[key]
                self._with_last.pop(key, None)

    def _build_histograms(self, buckets: Mapping[str, tuple[float, ...]]) -> None:
        # Edges cannot change under a running histogram: new edges start new histograms.
        bounds = {kind: _bounds(buckets[kind]) for kind in LATENCY_KINDS}
        if self._latency is not None:
            log.info("histogram edges changed on reload: the latency histograms start over")
            self._registry.unregister(self._latency)
        self._bounds = bounds
        self._edges = {kind: tuple(number(b) for b in edges) for kind, edges in bounds.items()}
        sizes = {kind: len(edges) for kind, edges in bounds.items()}
        for series in self._series.values():
            series.latency = {kind: _Histogram(size) for kind, size in sizes.items()}
            series.text = None
        self._buckets = dict(buckets)
        self._latency = _Families(self, "latency")
        self._registry.register(self._latency)

    def _prepare(self, target: str, model: str) -> _Series:
        """Every counting series of (target, model), at 0: a target that always fails
        has all its series."""
        series = self._series.get((target, model))
        if series is None:
            sizes = {kind: len(edges) for kind, edges in self._bounds.items()}
            series = self._series[(target, model)] = _Series(target, model, sizes)
        return series

    def record(self, target: str, result: ProbeResult) -> None:
        with self._lock:
            # A probe that finished after its target left the config counts nowhere.
            if target not in self._targets:
                return
            series = self._prepare(target, result.model)
            self._record(series, result)
            series.text = None
            self._with_last[(target, result.model)] = None

    def _record(self, series: _Series, result: ProbeResult) -> None:
        series.attempts += 1
        for phase, duration in (
            ("dns", result.dns_ns),
            ("connect", result.connect_ns),
            ("tls", result.tls_ns),
        ):
            if duration is not None:
                series.connection[phase].observe(CONNECTION_BOUNDS, duration / 1e9)
        degraded = result.timing.degraded
        if degraded is not None:
            series.degraded[degraded.value] += 1
        if not result.ok or degraded is None:
            series.eligible += 1
        latency, bounds = series.latency, self._bounds
        if result.headers_ns is not None and degraded is None:
            latency["headers"].observe(bounds["headers"], result.headers_ns / 1e9)
        # No stream, no bursts: a failed connect must not keep the previous probe's share.
        delivery = result.delivery
        burst_share = delivery.burst_share if delivery else 0.0
        series.last = (1.0 if result.ok else 0.0, burst_share, result.started_at)
        if delivery is not None and delivery.buffered:
            series.buffered += 1
        if not result.ok:
            series.failures[result.outcome.value] += 1
            return
        if result.output_tokens:
            series.tokens += result.output_tokens
        if degraded is not None:
            return
        if result.first_token_ns is not None:
            latency["ttft"].observe(bounds["ttft"], result.first_token_ns / 1e9)
        if result.tpot_ns is not None:
            latency["tpot"].observe(bounds["tpot"], result.tpot_ns / 1e9)
        if result.done_ns is not None:
            latency["e2e"].observe(bounds["e2e"], result.done_ns / 1e9)
        itl, itl_bounds = latency["itl"], bounds["itl"]
        for gap in result.itl_ns:
            itl.observe(itl_bounds, gap / 1e9)

    # -- exposition ---------------------------------------------------------------------
    def families(self, part: str) -> tuple[_Family, ...]:
        if part == "latency":
            return tuple(LATENCY[kind] for kind in LATENCY_KINDS)
        return (*COUNTING, *LAST_VALUES)

    def render_text(self, part: str) -> str | None:
        """This part's families in the text format, each series' lines rendered once per
        change; None while ``_created`` series are on (then ``collect()`` serves)."""
        if created_series_enabled():
            return None
        with self._lock:
            every = [self._text(s) for s in self._series.values()]
            if part == "latency":
                return "".join(
                    LATENCY[kind].header() + "".join(t[len(COUNTING) + 3 + i] for t in every)
                    for i, kind in enumerate(LATENCY_KINDS)
                )
            out = [f.header() + "".join(t[i] for t in every) for i, f in enumerate(COUNTING)]
            lasts = [self._text(self._series[key]) for key in self._with_last]
            for i, family in enumerate(LAST_VALUES):
                out.append(family.header() + "".join(t[len(COUNTING) + i] for t in lasts))
            return "".join(out)

    def _text(self, s: _Series) -> tuple[str, ...]:
        if s.text is not None:
            return s.text
        self.renders += 1
        labels = s.labels
        model, target = s.model, s.target
        pairs = (("target", target), ("model", model))
        connection = "".join(
            histogram_lines(
                CONNECTION.name,
                label_text((("target", target), ("model", model), ("phase", phase))),
                self._connection_edges,
                s.connection[phase].counts,
                s.connection[phase].total,
            )
            for phase in CONNECTION_PHASES
        )

        def by(family: _Family, label: str, values: Mapping[str, float]) -> str:
            return "".join(
                f"{family.name}{{{label_text(((label, key), *pairs))}}} {number(value)}\n"
                for key, value in values.items()
            )

        def one(family: _Family, value: float) -> str:
            return f"{family.name}{{{labels}}} {number(value)}\n"

        last = s.last
        lasts = (
            ("", "", "")
            if last is None
            else tuple(one(family, value) for family, value in zip(LAST_VALUES, last, strict=True))
        )
        latency = tuple(
            histogram_lines(
                LATENCY[kind].name,
                labels,
                self._edges[kind],
                s.latency[kind].counts,
                s.latency[kind].total,
            )
            for kind in LATENCY_KINDS
        )
        s.text = (
            connection,
            by(DEGRADED, "reason", s.degraded),
            one(LATENCY_ELIGIBLE, s.eligible),
            one(ATTEMPTS, s.attempts),
            by(FAILURES, "outcome", s.failures),
            one(TOKENS, s.tokens),
            one(BUFFERED, s.buffered),
            *lasts,
            *latency,
        )
        return s.text

    def collect(self, part: str) -> Iterator[Metric]:
        """The same families as ``render_text``, as metric families (with ``_created``
        samples when prometheus_client has them on). Built under the lock, yielded after."""
        created = created_series_enabled()
        with self._lock:
            if part == "latency":
                families = [self._latency_family(kind, created) for kind in LATENCY_KINDS]
            else:
                families = self._counting_families(created)
        return iter(families)

    def _latency_family(self, kind: str, created: bool) -> Metric:
        family = HistogramMetricFamily(
            LATENCY[kind].name, LATENCY[kind].documentation, labels=LABELS
        )
        for s in self._series.values():
            _add_histogram(family, {"target": s.target, "model": s.model},
                           self._edges[kind], s.latency[kind], created)  # fmt: skip
        return family

    def _counting_families(self, created: bool) -> list[Metric]:
        connection = HistogramMetricFamily(
            CONNECTION.name, CONNECTION.documentation, labels=CONNECTION.labels
        )
        for s in self._series.values():
            for phase in CONNECTION_PHASES:
                labels = {"target": s.target, "model": s.model, "phase": phase}
                _add_histogram(
                    connection, labels, self._connection_edges, s.connection[phase], created
                )
        families: list[Metric] = [connection]
        values_of: tuple[tuple[_Family, Callable[[_Series], float | dict[str, float]]], ...] = (
            (DEGRADED, lambda s: s.degraded),
            (LATENCY_ELIGIBLE, lambda s: s.eligible),
            (ATTEMPTS, lambda s: s.attempts),
            (FAILURES, lambda s: s.failures),
            (TOKENS, lambda s: s.tokens),
            (BUFFERED, lambda s: s.buffered),
        )
        for family, values in values_of:
            counter = CounterMetricFamily(family.name, family.documentation, labels=family.labels)
            for s in self._series.values():
                when = s.created if created else None
                value = values(s)
                if isinstance(value, dict):
                    for name, count in value.items():
                        counter.add_metric((s.target, s.model, name), count, created=when)
                else:
                    counter.add_metric((s.target, s.model), value, created=when)
            families.append(counter)
        for i, family in enumerate(LAST_VALUES):
            gauge = GaugeMetricFamily(family.name, family.documentation, labels=LABELS)
            for target_model in self._with_last:
                last = self._series[target_model].last
                if last is not None:
                    gauge.add_metric(target_model, last[i])
            families.append(gauge)
        return families


def _add_histogram(
    family: HistogramMetricFamily,
    labels: dict[str, str],
    edges: Sequence[str],
    histogram: _Histogram,
    created: bool,
) -> None:
    cumulative, buckets = 0.0, []
    for edge, count in zip(edges, histogram.counts, strict=True):
        cumulative += count
        buckets.append((edge, cumulative))
    family.add_metric(list(labels.values()), buckets, histogram.total)
    if created:
        family.samples.append(Sample(family.name + "_created", labels, histogram.created))
