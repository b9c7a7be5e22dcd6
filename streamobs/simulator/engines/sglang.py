"""SGLang 0.5.23 /metrics series, fed by what the simulator actually served.

Names, HELP strings, types, labels and bucket edges are SGLang's own
(``sglang/srt/observability/metrics_collector.py``, see ``tests/data/sglang/``). SGLang
serves its metrics in prometheus_client's multiprocess mode, so the text has no
``_created`` series and no family without a series; ``render`` drops both the same way.

Differences from a real server, by design: the scheduler gauges are read live at scrape
time (SGLang refreshes them at each prefill batch, every 40 decode steps and when idle),
and nothing is ever cached, retracted or structured.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from streamobs.simulator.engines.base import EngineMetrics, Running

# The scheduler's labels (TP 1, no PP, no EP, no DP attention) and the tokenizer's.
_SCHEDULER = ("engine_type", "model_name", "tp_rank", "pp_rank", "moe_ep_rank")
_TOKENIZER = ("model_name", "engine_type")
_ENGINE_TYPE = "unified"
_RANKS = ("0", "0", "0")
_STREAMING = "true"

_TTFT_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
    200.0, 400.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060,
    0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0, 6.0, 8.0,
)  # fmt: skip
_E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
    200.0, 400.0, 600.0, 1200.0, 1800.0, 2400.0,
)  # fmt: skip
_QUEUE_BUCKETS = (
    0.0, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0,
    15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 200.0, 300.0, 400.0,
    500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0, 1400.0, 1600.0, 1800.0, 2000.0,
    2500.0, 3000.0,
)  # fmt: skip
# exponential_buckets(start=0.001, width=1.62, length=30)
_STAGE_BUCKETS = tuple(0.001 * 1.62**i for i in range(30))
_TOKEN_COUNT_BUCKETS = (
    100.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0,
    7000.0, 8000.0, 9000.0, 10000.0, 12500.0, 15000.0, 17500.0, 20000.0, 22500.0, 25000.0,
    27500.0, 30000.0, 35000.0, 40000.0, 60000.0, 80000.0, 100000.0, 200000.0, 300000.0,
    400000.0, 600000.0, 800000.0, 1000000.0, 1100000.0,
)  # fmt: skip


class _Multiprocess:
    """The registry as SGLang's ``MultiProcessCollector`` serves it: no ``_created``
    samples, no family without samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            if metric.samples:
                yield metric


class SglangMetrics(EngineMetrics):
    """SGLang 0.5.23's scheduler and tokenizer-manager families."""

    kind = "sglang"

    def declare(self, r: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _SCHEDULER, registry=r, multiprocess_mode="mostrecent")

        self._num_running = gauge("sglang:num_running_reqs", "The number of running requests.")
        self._num_queue = gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue."
        )
        self._token_usage = gauge("sglang:token_usage", "The token usage.")
        self._full_token_usage = gauge(
            "sglang:full_token_usage", "The token usage for full attention layers."
        )
        self._num_used_tokens = gauge("sglang:num_used_tokens", "The number of used tokens.")
        self._kv_available = gauge(
            "sglang:kv_available_tokens", "Number of free token slots in the KV cache pool."
        )
        self._kv_evictable = gauge(
            "sglang:kv_evictable_tokens",
            "Number of evictable (radix-cached) token slots in the KV cache pool.",
        )
        self._kv_used = gauge(
            "sglang:kv_used_tokens", "Number of actively used token slots in the KV cache pool."
        )
        self._cache_hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self._max_total_num_tokens = gauge(
            "sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool."
        )
        self._realtime_tokens = Counter(
            "sglang:realtime_tokens_total",
            "Total number of tokens processed (updated on each log interval). "
            "mode: prefill_compute, prefill_cache, decode.",
            (*_SCHEDULER, "mode"),
            registry=r,
        )
        self._queue_time = Histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            _SCHEDULER,
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self._per_stage = Histogram(
            "sglang:per_stage_req_latency_seconds",
            "The latency of each stage of requests.",
            (*_SCHEDULER, "stage"),
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        # Tokenizer manager.
        self._prompt_tokens = Counter(
            "sglang:prompt_tokens_total",
            "Number of prefill tokens processed.",
            (*_TOKENIZER, "is_streaming"),
            registry=r,
        )
        self._generation_tokens = Counter(
            "sglang:generation_tokens_total",
            "Number of generation tokens processed.",
            (*_TOKENIZER, "is_streaming"),
            registry=r,
        )
        self._num_requests = Counter(
            "sglang:num_requests_total",
            "Number of requests processed.",
            (*_TOKENIZER, "is_streaming"),
            registry=r,
        )
        self._num_aborted = Counter(
            "sglang:num_aborted_requests_total",
            "Number of requests aborted.",
            _TOKENIZER,
            registry=r,
        )
        self._prompt_tokens_histogram = Histogram(
            "sglang:prompt_tokens_histogram",
            "Histogram of prompt token length.",
            _TOKENIZER,
            buckets=_TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self._uncached_prompt_tokens_histogram = Histogram(
            "sglang:uncached_prompt_tokens_histogram",
            "Histogram of uncached (compute) prompt token length.",
            _TOKENIZER,
            buckets=_TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self._generation_tokens_histogram = Histogram(
            "sglang:generation_tokens_histogram",
            "Histogram of generation token length.",
            _TOKENIZER,
            buckets=_TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            (*_TOKENIZER, "is_streaming"),
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self._itl = Histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _TOKENIZER,
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self._tpot = Histogram(
            "sglang:request_time_per_output_token_seconds",
            "Per-request TPOT in seconds: (finished_time - first_token_time) / "
            "(completion_tokens - 1).",
            (*_TOKENIZER, "is_streaming"),
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self._e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            (*_TOKENIZER, "is_streaming"),
            buckets=_E2E_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(_Multiprocess(self.registry))

    @staticmethod
    def _scheduler(model: str) -> tuple[str, ...]:
        return (_ENGINE_TYPE, model, *_RANKS)

    @staticmethod
    def _tokenizer(model: str) -> tuple[str, str]:
        return (model, _ENGINE_TYPE)

    def on_model(self, model: str) -> None:
        s = self._scheduler(model)
        self._num_running.labels(*s).set_function(lambda: self.running_count(model))
        self._num_queue.labels(*s).set_function(lambda: self.waiting_count(model))
        # SGLang rounds the bottleneck pool's usage to 2 decimals; the full pool's is exact.
        self._token_usage.labels(*s).set_function(lambda: round(self.kv_usage(model), 2))
        self._full_token_usage.labels(*s).set_function(lambda: self.kv_usage(model))
        self._num_used_tokens.labels(*s).set_function(lambda: self.kv_tokens_used(model))
        self._kv_used.labels(*s).set_function(lambda: self.kv_tokens_used(model))
        self._kv_available.labels(*s).set_function(
            lambda: max(0, self.kv_cache_tokens - self.kv_tokens_used(model))
        )
        self._kv_evictable.labels(*s).set(0)
        self._cache_hit_rate.labels(*s).set(0)
        self._max_total_num_tokens.labels(*s).set(self.kv_cache_tokens)

    def admitted(self, model: str, request_id: str, prompt_tokens: int, queue_s: float) -> None:
        super().admitted(model, request_id, prompt_tokens, queue_s)
        # One sample per request: the wait before its first forward.
        self._queue_time.labels(*self._scheduler(model)).observe(queue_s)

    def first_token(self, model: str, request_id: str, prompt_tokens: int, ttft_s: float) -> None:
        super().first_token(model, request_id, prompt_tokens, ttft_s)
        with self._lock:
            prefill_s = self._running[model][request_id].prefill_seconds
        s = self._scheduler(model)
        self._per_stage.labels(*s, "prefill_forward").observe(prefill_s or 0.0)
        self._realtime_tokens.labels(*s, "prefill_compute").inc(prompt_tokens)
        self._ttft.labels(*self._tokenizer(model), _STREAMING).observe(ttft_s)

    def on_token(self, model: str, itl_s: float | None) -> None:
        self._realtime_tokens.labels(*self._scheduler(model), "decode").inc()
        if itl_s is not None:
            # observe_inter_token_latency(interval, num_new_tokens=1): one output, one token.
            self._itl.labels(*self._tokenizer(model)).observe(itl_s)

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        """A request cut short is an abort in SGLang: counted as aborted and still
        observed as a finished request (without TPOT)."""
        with self._lock:
            request = self._running[model][request_id]
        super().finished(model, request_id, finished_reason, e2e_s)
        if finished_reason is None:
            self._num_aborted.labels(*self._tokenizer(model)).inc()
            self._observe_finished(model, "abort", e2e_s, request)

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        self._observe_finished(model, reason, e2e_s, request)

    def _observe_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        t = self._tokenizer(model)
        self._prompt_tokens.labels(*t, _STREAMING).inc(request.prompt_tokens)
        self._generation_tokens.labels(*t, _STREAMING).inc(request.generated)
        self._num_requests.labels(*t, _STREAMING).inc()
        self._e2e.labels(*t, _STREAMING).observe(e2e_s)
        if reason in ("stop", "length") and request.generated > 1:
            ttft_s = request.queue_seconds + (request.prefill_seconds or 0.0)
            tpot = (e2e_s - ttft_s) / (request.generated - 1)
            if tpot > 0:
                self._tpot.labels(*t, _STREAMING).observe(tpot)
        self._prompt_tokens_histogram.labels(*t).observe(request.prompt_tokens)
        self._uncached_prompt_tokens_histogram.labels(*t).observe(request.prompt_tokens)
        self._generation_tokens_histogram.labels(*t).observe(request.generated)
