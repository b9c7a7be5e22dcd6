"""TensorRT-LLM ``trtllm-serve`` ``/prometheus/metrics``, fed by the simulator's events.

``trtllm-serve`` records its ``MetricsCollector`` families with prometheus_client in
multiprocess mode and serves them through ``MultiProcessCollector``; this module yields the
same samples from its own collector, so ``generate_latest`` writes the same text: no
``_created`` series, float values, sorted label names, a histogram's ``_sum`` before its
buckets, and a ``pid`` label on every gauge. The model name is in ``model_name``.

Per-request families are recorded when a request finishes (one that did not finish is not
recorded at all); the iteration-level gauges and counters change only then too, from the
engine's latest iteration, in which the finishing request was still active.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from streamobs.simulator.engines.base import EngineMetrics, Running

# prometheus_client's float text (1.0, 0.3, +Inf), as it writes bucket edges.
_go_float = cast("Callable[[float], str]", floatToGoString)

_P = "trtllm_"
_ENGINE_TYPE = "trtllm"
_TOKENS_PER_BLOCK = 32
_MAX_ACTIVE = 2048  # max_batch_size, the PyTorch backend's default
_MAX_NUM_TOKENS = 8192
_GPU_MEMORY_BYTES = 1319108608.0
_CPU_MEMORY_BYTES = 61865984.0
_PINNED_MEMORY_BYTES = 33554432.0

_REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_PREFILL_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_CACHED_TOKENS_BUCKETS = (0.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0)

# name (without prefix) → (HELP, buckets), in MetricsCollector's order.
_HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "e2e_request_latency_seconds": (
        "Histogram of end to end request latency in seconds.",
        _REQUEST_BUCKETS,
    ),
    "time_to_first_token_seconds": (
        "Histogram of time to first token in seconds.",
        _TTFT_BUCKETS,
    ),
    "time_per_output_token_seconds": (
        "Histogram of time per output token in seconds.",
        _TPOT_BUCKETS,
    ),
    "request_queue_time_seconds": (
        "Histogram of time spent in WAITING phase for request.",
        _REQUEST_BUCKETS,
    ),
    "request_prefill_time_seconds": (
        "Histogram of prefill (context) phase duration in seconds "
        "(first_token_time - first_scheduled_time).",
        _PREFILL_BUCKETS,
    ),
    "request_decode_time_seconds": (
        "Histogram of decode (generation) phase duration in seconds "
        "(last_token_time - first_token_time).",
        _REQUEST_BUCKETS,
    ),
    "request_inference_time_seconds": (
        "Histogram of total inference duration in seconds "
        "(last_token_time - first_scheduled_time).",
        _REQUEST_BUCKETS,
    ),
    "prompt_cached_tokens_per_request": (
        "Histogram of cached prompt tokens per request.",
        _CACHED_TOKENS_BUCKETS,
    ),
}
# Counters, by their exposed name without prefix and without ``_total``.
_COUNTERS: dict[str, str] = {
    "prompt_cached_tokens": (
        "Process-lifetime total prompt tokens served from KV cache. Resets only when the "
        "serving process restarts, not when the KV cache is flushed or evicted."
    ),
    "request_success": "Count of successfully processed requests.",
    "prompt_tokens": "Cumulative number of prompt (input) tokens processed.",
    "generation_tokens": "Cumulative number of generation (output) tokens produced.",
    "kv_cache_missed_blocks": "Cumulative number of KV cache blocks missed (cache misses)",
    "num_requests_completed": "Total number of completed requests across iterations",
}
_GAUGES: dict[str, str] = {
    "num_requests_running": "Number of active requests",
    "num_requests_waiting": "Number of queued requests",
    "max_num_active_requests": "Maximum number of active requests",
    "iteration_latency_seconds": "Iteration latency in seconds",
    "gpu_memory_usage_bytes": "GPU memory usage in bytes",
    "cpu_memory_usage_bytes": "CPU memory usage in bytes",
    "pinned_memory_usage_bytes": "Pinned memory usage in bytes",
    "max_batch_size_static": "Static maximum batch size",
    "max_batch_size_runtime": "Runtime maximum batch size",
    "max_num_tokens_runtime": "Runtime maximum number of tokens",
    "kv_cache_hit_rate": "KV cache hit rate",
    "kv_cache_utilization": "KV cache utilization",
    "kv_cache_max_blocks": "Maximum number of KV cache blocks",
    "kv_cache_free_blocks": "Number of free KV cache blocks",
    "kv_cache_used_blocks": "Number of used KV cache blocks",
    "kv_cache_tokens_per_block": "Number of tokens per KV cache block",
    "num_scheduled_requests": "Number of scheduled requests",
    "num_context_requests": "Number of context (prefill) requests",
    "num_generation_requests": "Number of generation (decode) requests",
    "num_paused_requests": "Number of paused requests",
    "total_context_tokens": "Total number of context tokens",
    "avg_decoded_tokens_per_iter": "Average number of decoded tokens per iteration",
    "prefill_batch_occupancy": "Fraction of max active slots occupied by context requests.",
}


# Recorded even when zero (a request scheduled at once, no cached prompt token).
_ZERO_RECORDED = ("request_queue_time_seconds", "prompt_cached_tokens_per_request")


@dataclass
class _Histogram:
    edges: tuple[float, ...]
    counts: list[float] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0.0] * len(self.edges)

    def observe(self, value: float) -> None:
        self.total += value
        for i, edge in enumerate(self.edges):
            if value <= edge:
                self.counts[i] += 1.0
                break


@dataclass
class _ModelState:
    histograms: dict[str, _Histogram] = field(default_factory=dict)
    counters: dict[tuple[str, str], float] = field(default_factory=dict)  # (name, reason)
    gauges: dict[str, float] = field(default_factory=dict)
    decode_seconds: dict[str, float] = field(default_factory=dict)  # per request
    last_itl: float = 0.0


class _Collector(Collector):
    def __init__(self, owner: TrtllmMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        return iter(self._owner.families())


class TrtllmMetrics(EngineMetrics):
    """``trtllm-serve``'s ``MetricsCollector`` families, as its multiprocess exposition has them."""

    kind = "trtllm"
    metrics_path = "/prometheus/metrics"

    def declare(self, registry: CollectorRegistry) -> None:
        self._state = threading.Lock()
        self._per_model: dict[str, _ModelState] = {}
        self._pid = str(os.getpid())
        registry.register(_Collector(self))

    def _model(self, model: str) -> _ModelState:
        return self._per_model.setdefault(model, _ModelState())

    def on_model(self, model: str) -> None:
        with self._state:
            # The one child MetricsCollector creates at start-up.
            self._model(model).counters.setdefault(("prompt_cached_tokens", ""), 0.0)

    def first_token(self, model: str, request_id: str, prompt_tokens: int, ttft_s: float) -> None:
        super().first_token(model, request_id, prompt_tokens, ttft_s)
        with self._state:
            state = self._model(model)
            state.decode_seconds[request_id] = 0.0
            # A context phase without prefix reuse misses every block it fills.
            missed = float(math.ceil(prompt_tokens / _TOKENS_PER_BLOCK))
            key = ("kv_cache_missed_blocks", "")
            state.counters[key] = state.counters.get(key, 0.0) + missed

    def token(self, model: str, request_id: str, itl_s: float | None) -> None:
        super().token(model, request_id, itl_s)
        if itl_s is None:
            return
        with self._state:
            state = self._model(model)
            state.decode_seconds[request_id] = state.decode_seconds.get(request_id, 0.0) + itl_s
            state.last_itl = itl_s

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        with self._lock:
            request = self._running[model].get(request_id)
        super().finished(model, request_id, finished_reason, e2e_s)
        with self._state:
            decode_s = self._model(model).decode_seconds.pop(request_id, 0.0)
        if finished_reason in (None, "error") or request is None:
            return  # the server never finished answering: nothing is recorded
        running = self.running_count(model) + 1  # the finishing request was in the iteration
        waiting = self.waiting_count(model)
        used_tokens = self.kv_tokens_used(model) + request.prompt_tokens + request.generated
        with self._state:
            state = self._model(model)
            self._record_request(state, _trt_reason(finished_reason), e2e_s, decode_s, request)
            self._record_iteration(state, running, waiting, used_tokens)

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        pass  # recorded in finished(), which knows the request's decode time

    def _record_request(
        self, state: _ModelState, reason: str, e2e_s: float, decode_s: float, request: Running
    ) -> None:
        queue_s = request.queue_seconds
        prefill_s = request.prefill_seconds or 0.0
        values = {
            "e2e_request_latency_seconds": e2e_s,
            "time_to_first_token_seconds": queue_s + prefill_s,
            "request_queue_time_seconds": queue_s,
            "request_prefill_time_seconds": prefill_s,
            "request_decode_time_seconds": decode_s,
            "request_inference_time_seconds": prefill_s + decode_s,
            "prompt_cached_tokens_per_request": 0.0,
        }
        if request.generated > 1:
            values["time_per_output_token_seconds"] = decode_s / (request.generated - 1)
        for name, value in values.items():
            if value <= 0 and name not in _ZERO_RECORDED:
                continue  # MetricsCollector skips a time of zero
            histogram = state.histograms.get(name)
            if histogram is None:
                histogram = state.histograms[name] = _Histogram(_HISTOGRAMS[name][1])
            histogram.observe(value)
        for key, by in (
            (("request_success", reason), 1.0),
            (("prompt_tokens", ""), float(request.prompt_tokens)),
            (("generation_tokens", ""), float(request.generated)),
            (("num_requests_completed", ""), 1.0),
        ):
            if by > 0:
                state.counters[key] = state.counters.get(key, 0.0) + by

    def _record_iteration(
        self, state: _ModelState, running: int, waiting: int, used_tokens: int
    ) -> None:
        max_blocks = max(1, self.kv_cache_tokens // _TOKENS_PER_BLOCK)
        used_blocks = min(max_blocks, math.ceil(used_tokens / _TOKENS_PER_BLOCK))
        state.gauges.update(
            {
                "num_requests_running": float(running),
                "num_requests_waiting": float(waiting),
                "max_num_active_requests": float(_MAX_ACTIVE),
                "iteration_latency_seconds": state.last_itl,
                "gpu_memory_usage_bytes": _GPU_MEMORY_BYTES,
                "cpu_memory_usage_bytes": _CPU_MEMORY_BYTES,
                "pinned_memory_usage_bytes": _PINNED_MEMORY_BYTES,
                "max_batch_size_static": float(_MAX_ACTIVE),
                "max_batch_size_runtime": float(_MAX_ACTIVE),
                "max_num_tokens_runtime": float(_MAX_NUM_TOKENS),
                "kv_cache_hit_rate": 0.0,
                "kv_cache_utilization": used_blocks / max_blocks,
                "kv_cache_max_blocks": float(max_blocks),
                "kv_cache_free_blocks": float(max_blocks - used_blocks),
                "kv_cache_used_blocks": float(used_blocks),
                "kv_cache_tokens_per_block": float(_TOKENS_PER_BLOCK),
                "num_scheduled_requests": float(running),
                "num_context_requests": 0.0,
                "num_generation_requests": float(running),
                "num_paused_requests": 0.0,
                "total_context_tokens": 0.0,
                "avg_decoded_tokens_per_iter": 1.0,
                "prefill_batch_occupancy": 0.0,
            }
        )

    # -- exposition ---------------------------------------------------------------------
    def families(self) -> list[Metric]:
        """The families as MultiProcessCollector yields them."""
        with self._state:
            models = sorted(self._per_model.items())
            histograms: list[Metric] = []
            for name, (help_text, _) in _HISTOGRAMS.items():
                metric = Metric(_P + name, help_text, "histogram")
                for model, state in models:
                    histogram = state.histograms.get(name)
                    if histogram is not None:
                        _add_histogram(metric, _labels(model), histogram)
                if metric.samples:
                    histograms.append(metric)
            counters: list[Metric] = []
            for name, help_text in _COUNTERS.items():
                metric = Metric(_P + name, help_text, "counter")
                for model, state in models:
                    for (counter, reason), value in sorted(state.counters.items()):
                        if counter != name:
                            continue
                        labels = _labels(model)
                        if name == "request_success":
                            labels["finished_reason"] = reason
                        metric.samples.append(Sample(_P + name + "_total", _sorted(labels), value))
                if metric.samples:
                    counters.append(metric)
            gauges: list[Metric] = []
            for name, help_text in _GAUGES.items():
                metric = Metric(_P + name, help_text, "gauge")
                for model, state in models:
                    if name in state.gauges:
                        labels = _labels(model) | {"pid": self._pid}
                        metric.samples.append(
                            Sample(_P + name, _sorted(labels), state.gauges[name])
                        )
                if metric.samples:
                    gauges.append(metric)
        return histograms + counters + gauges


def _trt_reason(reason: str) -> str:
    """TensorRT-LLM's finish reasons: stop, length, timeout, cancelled."""
    return {"abort": "cancelled", "repetition": "stop"}.get(reason, reason)


def _labels(model: str) -> dict[str, str]:
    return {"engine_type": _ENGINE_TYPE, "model_name": model}


def _sorted(labels: dict[str, str]) -> dict[str, str]:
    return dict(sorted(labels.items()))


def _add_histogram(metric: Metric, labels: dict[str, str], histogram: _Histogram) -> None:
    name = metric.name
    metric.samples.append(Sample(name + "_sum", _sorted(labels), histogram.total))
    cumulative = 0.0
    for edge, count in zip(histogram.edges, histogram.counts, strict=True):
        cumulative += count
        bucket = labels | {"le": _go_float(edge)}
        metric.samples.append(Sample(name + "_bucket", _sorted(bucket), cumulative))
    bucket = labels | {"le": "+Inf"}
    metric.samples.append(Sample(name + "_bucket", _sorted(bucket), cumulative))
    metric.samples.append(Sample(name + "_count", _sorted(labels), cumulative))
