"""Hugging Face TGI 3.3 (router + ``backends/v3``) ``/metrics``, fed by the simulator's events.

TGI records its metrics with the Rust ``metrics`` crate and serves them through
``metrics-exporter-prometheus`` 0.15.3, whose text is not what prometheus_client writes:

* counters keep their bare names (``tgi_request_count``, no ``_total``) and integer values;
* numbers are Rust's ``f64`` ``Display``: shortest round-trip digits, never an exponent
  (``0.00015000000000000001``, ``3`` for 3.0);
* a family has a ``# HELP`` line only when TGI described it (the first description wins);
  ``tgi_request_failure``, ``tgi_batch_concat``, ``tgi_batch_concat_duration`` and
  ``tgi_batch_inference_failure`` have none;
* every name ending in ``duration`` and the token-count families are histograms with the
  router's bucket edges; ``tgi_request_skipped_tokens`` matches no bucket rule and is a
  summary (quantiles over a 60 s rolling window, cumulative ``_sum``/``_count``);
* a series exists only once recorded; each family ends with an empty line; counters come
  first, then gauges, then histograms and summaries; no label carries the model name.

The simulator serves one batch per request (no continuous batching), so the batch-level
families are driven per request: one prefill call per first token, one decode call per
further token. ``tgi_request_count`` grows by 2 per request, as TGI counts an OpenAI-route
request once in the route handler and again in ``generate_internal``/``generate_stream_internal``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry

from streamobs.simulator.engines.base import EngineMetrics, Running

# The context of the simulated model: TGI's defaults for a 4096-token model.
MAX_INPUT_TOKENS = 4095
MAX_TOTAL_TOKENS = 4096


def _duration_buckets() -> tuple[float, ...]:
    # router/src/server.rs: 35 edges, 0.0001 * 1.5^k for k = 1..35, built by repeated product.
    edges = []
    value = 0.0001
    for _ in range(35):
        value *= 1.5
        edges.append(value)
    return tuple(edges)


_DURATION_BUCKETS = _duration_buckets()
_INPUT_LENGTH_BUCKETS = tuple((MAX_INPUT_TOKENS / 100.0) * (x + 1) for x in range(100))
_TOTAL_TOKENS_BUCKETS = tuple((MAX_TOTAL_TOKENS / 100.0) * (x + 1) for x in range(100))
_BATCH_SIZE_BUCKETS = tuple(float(x + 1) for x in range(1024))
_QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
_SUMMARY_WINDOW_S = 60.0  # 3 buckets of 20 s, the exporter's default

# The HELP text TGI describes each family with (``describe_*`` in router/src/server.rs; for a
# family described twice, the first description is kept).
_HELP = {
    "tgi_request_success": "Number of successful requests",
    "tgi_request_duration": "Request duration",
    "tgi_request_validation_duration": "Request validation duration",
    "tgi_request_queue_duration": "Request queue duration",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
    "tgi_request_generated_tokens": "Generated tokens per request",
    "tgi_batch_inference_count": "Inference calls per method (prefill or decode)",
    "tgi_request_count": "Total number of requests",
    "tgi_batch_inference_success": (
        "Number of successful inference calls per method (prefill or decode)"
    ),
    "tgi_batch_current_size": "Current batch size",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
    "tgi_request_max_new_tokens": "Maximum new tokens per request",
    "tgi_batch_inference_duration": "Batch inference duration",
    "tgi_batch_forward_duration": "Batch forward duration per method (prefill or decode)",
    "tgi_request_skipped_tokens": "Speculated tokens per request",
    "tgi_batch_filter_duration": (
        "Time spent filtering batches and sending generated tokens per method (prefill or decode)"
    ),
    "tgi_batch_decode_duration": "Time spent decoding a batch per method (prefill or decode)",
    "tgi_request_input_length": "Input token length per request",
    "tgi_batch_next_size": "Batch size of the next batch",
}

# Share of a batch call's time spent in the shard's forward pass and in detokenising; the
# rest is the router's filtering and sending.
_FORWARD_SHARE = 0.9
_DECODE_SHARE = 0.02

Labels = tuple[tuple[str, str], ...]


def rust_f64(value: float) -> str:
    """``value`` as Rust's ``f64`` ``Display`` writes it: shortest round-trip, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def _label_text(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{k}="{v}"' for k, v in labels]
    if extra is not None:
        pairs.append(f'{extra[0]}="{extra[1]}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


@dataclass
class _Histogram:
    edges: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.buckets = [0] * len(self.edges)

    def record(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, edge in enumerate(self.edges):
            if value <= edge:
                self.buckets[i] += 1


@dataclass
class _Summary:
    window: deque[tuple[float, float]] = field(default_factory=deque)
    total: float = 0.0
    count: int = 0

    def record(self, value: float, now: float) -> None:
        self.window.append((now, value))
        self.total += value
        self.count += 1

    def quantile(self, q: float, now: float) -> float:
        while self.window and self.window[0][0] < now - _SUMMARY_WINDOW_S:
            self.window.popleft()
        values = sorted(v for _, v in self.window)
        if not values:
            return 0.0
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _buckets_for(name: str) -> tuple[float, ...] | None:
    """The bucket edges the router sets for ``name``, None for a summary."""
    if name.endswith("duration"):
        return _DURATION_BUCKETS
    return {
        "tgi_request_input_length": _INPUT_LENGTH_BUCKETS,
        "tgi_request_generated_tokens": _TOTAL_TOKENS_BUCKETS,
        "tgi_request_max_new_tokens": _TOTAL_TOKENS_BUCKETS,
        "tgi_batch_next_size": _BATCH_SIZE_BUCKETS,
    }.get(name)


class TgiMetrics(EngineMetrics):
    """TGI 3.3's router families, in metrics-exporter-prometheus 0.15.3's text format."""

    kind = "tgi"

    def declare(self, registry: CollectorRegistry) -> None:
        # Nothing goes in the prometheus_client registry: render() writes the text itself.
        self._state = threading.Lock()
        self._counters: dict[str, dict[Labels, int]] = {}
        self._distributions: dict[str, dict[Labels, _Histogram | _Summary]] = {}
        self._gauges_seen = False
        self._batches_seen = False
        self._joined: set[str] = set()  # requests admitted while another was running

    # -- recording, as the router's macros do -------------------------------------------
    def _count(self, name: str, labels: Labels = (), by: int = 1) -> None:
        with self._state:
            family = self._counters.setdefault(name, {})
            family[labels] = family.get(labels, 0) + by

    def _record(self, name: str, value: float, labels: Labels = ()) -> None:
        with self._state:
            family = self._distributions.setdefault(name, {})
            series = family.get(labels)
            if series is None:
                edges = _buckets_for(name)
                series = _Histogram(edges) if edges is not None else _Summary()
                family[labels] = series
            if isinstance(series, _Summary):
                series.record(value, time.monotonic())
            else:
                series.record(value)

    def _batch_call(self, method: str, seconds: float) -> None:
        labels = (("method", method),)
        self._count("tgi_batch_inference_count", labels)
        self._record("tgi_batch_forward_duration", seconds * _FORWARD_SHARE, labels)
        self._record("tgi_batch_decode_duration", seconds * _DECODE_SHARE, labels)
        filter_share = 1.0 - _FORWARD_SHARE - _DECODE_SHARE
        self._record("tgi_batch_filter_duration", seconds * filter_share, labels)
        self._record("tgi_batch_inference_duration", seconds, labels)
        self._count("tgi_batch_inference_success", labels)
        self._record("tgi_request_skipped_tokens", 0.0)

    # -- events -------------------------------------------------------------------------
    def waiting_started(self, model: str) -> None:
        super().waiting_started(model)
        with self._state:
            self._gauges_seen = True

    def admitted(self, model: str, request_id: str, prompt_tokens: int, queue_s: float) -> None:
        joins = self.busy()
        super().admitted(model, request_id, prompt_tokens, queue_s)
        self._count("tgi_request_count", by=2)
        self._record("tgi_request_input_length", float(prompt_tokens))
        # The request gives no max_new_tokens here: TGI's default is what the context leaves.
        self._record("tgi_request_max_new_tokens", float(MAX_TOTAL_TOKENS - prompt_tokens))
        self._record("tgi_batch_next_size", 1.0)
        with self._state:
            self._gauges_seen = True
            self._batches_seen = True
            if joins:
                self._joined.add(request_id)
        if joins:
            # With chunking (v3's default), a new batch is concatenated into the running one.
            self._count("tgi_batch_concat", (("reason", "chunking"),))

    def first_token(self, model: str, request_id: str, prompt_tokens: int, ttft_s: float) -> None:
        super().first_token(model, request_id, prompt_tokens, ttft_s)
        with self._lock:
            prefill_s = self._running[model][request_id].prefill_seconds or 0.0
        with self._state:
            joined = request_id in self._joined
            self._joined.discard(request_id)
        if joined:
            # Recorded under method="decode" even for the prefill's concatenation, as TGI does.
            self._record("tgi_batch_concat_duration", prefill_s * 0.01, (("method", "decode"),))
        self._batch_call("prefill", prefill_s)

    def on_token(self, model: str, itl_s: float | None) -> None:
        if itl_s is not None:
            self._batch_call("decode", itl_s)

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        with self._state:
            self._joined.discard(request_id)
        super().finished(model, request_id, finished_reason, e2e_s)
        if finished_reason is None or finished_reason == "abort":
            # The client went away: the router finds the response channel closed.
            self._count("tgi_request_failure", (("err", "dropped"),))

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        if reason == "abort":
            return
        if reason == "error":
            self._count("tgi_request_failure", (("err", "generation"),))
            return
        inference_s = max(0.0, e2e_s - request.queue_seconds)
        generated = max(1, request.generated)
        self._count("tgi_request_success")
        self._record("tgi_request_duration", e2e_s)
        self._record("tgi_request_validation_duration", 0.0)  # no tokenizer here
        self._record("tgi_request_queue_duration", request.queue_seconds)
        self._record("tgi_request_inference_duration", inference_s)
        # Inference time (prefill included) over every generated token, the first one too.
        self._record("tgi_request_mean_time_per_token_duration", inference_s / generated)
        self._record("tgi_request_generated_tokens", float(request.generated))

    # -- exposition ---------------------------------------------------------------------
    def _gauge_values(self) -> dict[str, float]:
        with self._lock:
            models = list(self._models)
        waiting = sum(self.waiting_count(m) for m in models)
        running = sum(self.running_count(m) for m in models)
        tokens = sum(self.kv_tokens_used(m) for m in models)
        with self._state:
            gauges: dict[str, float] = {}
            if self._gauges_seen:
                gauges["tgi_queue_size"] = float(waiting)
            if self._batches_seen:
                gauges["tgi_batch_current_size"] = float(running)
                gauges["tgi_batch_current_max_tokens"] = float(tokens)
        return gauges

    def render(self) -> bytes:
        gauges = self._gauge_values()
        now = time.monotonic()
        out: list[str] = []

        def head(name: str, kind: str) -> None:
            if name in _HELP:
                out.append(f"# HELP {name} {_HELP[name]}\n")
            out.append(f"# TYPE {name} {kind}\n")

        with self._state:
            for name, counter_series in self._counters.items():
                head(name, "counter")
                for labels, count in counter_series.items():
                    out.append(f"{name}{_label_text(labels)} {count}\n")
                out.append("\n")
            for name, value in gauges.items():
                head(name, "gauge")
                out.append(f"{name} {rust_f64(value)}\n\n")
            for name, dist_series in self._distributions.items():
                first = next(iter(dist_series.values()))
                head(name, "summary" if isinstance(first, _Summary) else "histogram")
                for labels, series in dist_series.items():
                    text = _label_text(labels)
                    if isinstance(series, _Summary):
                        for q in _QUANTILES:
                            at = _label_text(labels, ("quantile", rust_f64(q)))
                            out.append(f"{name}{at} {rust_f64(series.quantile(q, now))}\n")
                    else:
                        for edge, count in zip(series.edges, series.buckets, strict=True):
                            le = _label_text(labels, ("le", rust_f64(edge)))
                            out.append(f"{name}_bucket{le} {count}\n")
                        inf = _label_text(labels, ("le", "+Inf"))
                        out.append(f"{name}_bucket{inf} {series.count}\n")
                    out.append(f"{name}_sum{text} {rust_f64(series.total)}\n")
                    out.append(f"{name}_count{text} {series.count}\n")
                out.append("\n")
        return "".join(out).encode()
