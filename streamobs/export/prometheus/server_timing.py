"""Each probe's own server span as Prometheus series, and the trace receiver's counts.

Per probe, from the ``llm_request`` span of its own request (never a mean over other
people's traffic): the server's queue time, TTFT, prefill, decode and e2e, and the path
time (client TTFT - server TTFT of the same request: network and proxies). Like the client
latency histograms these take only successful probes whose client stamps are exact; the
buckets reach down to 0.1 ms, since queue and path times on a healthy server are far below
the first bucket of vLLM's own histograms, and include every bucket of the matching client
histogram (so SLO thresholds stay bucket edges). Registered only while the receiver is on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from streamobs.probe.result import ProbeResult
from streamobs.traces.records import ServerTiming
from streamobs.traces.stats import TracesStats

LABELS = ("target", "model")
FINE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# name suffix, help, the client histogram whose edges are added, the span's field
SERIES = (
    (
        "ttft",
        "Server TTFT of each probe's own request (vLLM's span: arrival to first token).",
        "ttft",
        "ttft_seconds",
    ),
    ("queue", "Time each probe's own request waited in the server's queue.", None, "queue_seconds"),
    (
        "prefill",
        "Time the server spent in prefill for each probe's own request.",
        None,
        "prefill_seconds",
    ),
    ("decode", "Time the server spent decoding each probe's own request.", "e2e", "decode_seconds"),
    (
        "e2e",
        "Server end-to-end time of each probe's own request (arrival to finish).",
        "e2e",
        "e2e_seconds",
    ),
)


PATH = "path"  # the key of the path time's edges in ``bucket_edges``


def _edges(buckets: Mapping[str, tuple[float, ...]], name: str | None) -> tuple[float, ...]:
    return tuple(sorted({*FINE_BUCKETS, *(buckets.get(name, ()) if name else ())}))


def bucket_edges(buckets: Mapping[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
    """The edges of each histogram, by name suffix (``ttft``, ``queue``, ... and ``path``),
    from the client histograms' ``buckets``: the same for Prometheus and OTLP."""
    edges = {suffix: _edges(buckets, client) for suffix, _help, client, _field in SERIES}
    edges[PATH] = _edges(buckets, "ttft")
    return edges


class ServerTimingMetrics:
    """``record()`` is called once per probe joined to its span."""

    def __init__(
        self, registry: CollectorRegistry, buckets: Mapping[str, tuple[float, ...]]
    ) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        edges = bucket_edges(buckets)
        self.histograms: dict[str, Histogram] = {}
        for suffix, help_text, _client, _field in SERIES:
            self.histograms[suffix] = Histogram(
                f"streamobs_probe_server_{suffix}_seconds",
                help_text,
                LABELS,
                registry=registry,
                buckets=edges[suffix],
            )
        self.path = Histogram(
            "streamobs_probe_path_seconds",
            "Path time of each probe: client TTFT minus the server's TTFT of the same "
            "request (network, proxies and gateways between streamobs and the server).",
            LABELS,
            registry=registry,
            buckets=edges[PATH],
        )
        self.output_tokens = Counter(
            "streamobs_probe_server_output_tokens",
            "Output tokens the server generated for probes, from each probe's own span.",
            LABELS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "streamobs_probe_server_prompt_tokens",
            "Prompt tokens of probes as the server counted them, from each probe's own span.",
            LABELS,
            registry=registry,
        )

    def record(self, target: str, result: ProbeResult, timing: ServerTiming) -> bool:
        """Observe one joined probe; False (nothing observed) unless it succeeded with
        exact stamps."""
        if not result.ok or not result.exact:
            return False
        labels = (target, result.model)
        span = timing.span
        with self._lock:
            self._seen.add(labels)
            for suffix, _help, _client, field in SERIES:
                value = getattr(span, field)
                if value is not None:
                    self.histograms[suffix].labels(*labels).observe(value)
            if timing.path_seconds is not None:
                self.path.labels(*labels).observe(timing.path_seconds)
            if span.completion_tokens is not None:
                self.output_tokens.labels(*labels).inc(span.completion_tokens)
            if span.prompt_tokens is not None:
                self.prompt_tokens.labels(*labels).inc(span.prompt_tokens)
        return True

    def keep(self, targets: Iterable[str]) -> None:
        """Drop the series of every target but ``targets`` (after a reload)."""
        kept = set(targets)
        self._drop(lambda labels: labels[0] not in kept)

    def forget_models(self, target: str, kept: Iterable[str]) -> None:
        """Drop the series of ``target``'s models but ``kept`` (labels)."""
        models = set(kept)
        self._drop(lambda labels: labels[0] == target and labels[1] not in models)

    def _drop(self, gone: Callable[[tuple[str, str]], bool]) -> None:
        metrics = [*self.histograms.values(), self.path, self.output_tokens, self.prompt_tokens]
        with self._lock:
            for labels in [labels for labels in self._seen if gone(labels)]:
                self._seen.discard(labels)
                for metric in metrics:
                    with contextlib.suppress(KeyError):
                        metric.remove(*labels)


class TracesCollector:
    """The receiver's counts as ``streamobs_traces_*`` counters, read from a snapshot."""

    def __init__(self, source: Callable[[], TracesStats]) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        stats = self._source()
        receiver, join, forward = stats.receiver, stats.join, stats.forward

        def counter(name: str, help_text: str, value: int) -> CounterMetricFamily:
            return CounterMetricFamily(f"streamobs_traces_{name}", help_text, value=value)

        yield counter("requests", "OTLP trace requests received and decoded.", receiver.requests)
        yield counter("spans", "Spans received, of any kind.", receiver.spans)
        yield counter(
            "llm_request_spans",
            "llm_request spans received (one per served request).",
            receiver.llm_request_spans,
        )
        refused = CounterMetricFamily(
            "streamobs_traces_refused_requests",
            "OTLP trace requests refused, by reason (too_large, busy: too many at once, "
            "bad: not OTLP protobuf).",
            labels=("reason",),
        )
        refused.add_metric(("too_large",), receiver.refused_too_large)
        refused.add_metric(("busy",), receiver.refused_busy)
        refused.add_metric(("bad",), receiver.refused_bad)
        yield refused
        yield counter("spans_joined", "llm_request spans matched to their probe.", join.joined)
        yield counter(
            "spans_unmatched",
            "llm_request spans no probe claimed (other clients' requests, duplicates).",
            join.unmatched,
        )
        yield counter(
            "spans_late",
            "llm_request spans that came after their probe stopped waiting.",
            join.late,
        )
        yield counter(
            "probes_unjoined",
            "Probes whose wait for their own span ended without one (or that newer probes "
            "pushed out of the bounded wait list).",
            join.probes_unjoined + join.probes_dropped,
        )
        if forward is not None:
            yield counter(
                "forwarded_requests",
                "Received trace requests forwarded downstream.",
                forward.forwarded,
            )
            yield counter(
                "forward_dropped_requests",
                "Received trace requests not forwarded: the bounded forward queue was full.",
                forward.dropped,
            )
            yield counter(
                "forward_failures",
                "Trace requests the downstream refused or did not answer in time.",
                forward.failed,
            )

    def describe(self) -> Iterable[Metric]:
        return []
