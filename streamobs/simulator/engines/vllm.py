"""vLLM 0.32 (V1 engine) /metrics series, fed by what the simulator actually served.

Names, HELP strings, labels and bucket edges are those of a real vLLM 0.32 scrape, so
dashboards, alert rules and the vLLM collector can be exercised against the simulator.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamobs.simulator.engines.base import FINISHED_REASONS, EngineMetrics, Running

_ENGINE = "0"
_LABELS = ("engine", "model_name")

_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_REQUEST_SECONDS_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
_TOKEN_COUNT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


class VllmMetrics(EngineMetrics):
    """vLLM 0.32's V1 families."""

    kind = "vllm"

    def declare(self, r: CollectorRegistry) -> None:
        self._num_running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            _LABELS,
            registry=r,
        )
        self._num_waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            _LABELS,
            registry=r,
        )
        self._kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            _LABELS,
            registry=r,
        )
        self._prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            _LABELS,
            registry=r,
        )
        # Nothing is cached here, so hits stay at 0; the series exists for dashboards.
        self._prefix_hits = Counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            _LABELS,
            registry=r,
        )
        self._preemptions = Counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            _LABELS,
            registry=r,
        )
        self._prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", _LABELS, registry=r
        )
        self._generation_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            _LABELS,
            registry=r,
        )
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            ("engine", "finished_reason", "model_name"),
            registry=r,
        )
        self._request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            _LABELS,
            buckets=_TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self._request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            _LABELS,
            buckets=_TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _LABELS,
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self._itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _LABELS,
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            _LABELS,
            buckets=_REQUEST_SECONDS_BUCKETS,
            registry=r,
        )
        self._queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _LABELS,
            buckets=_REQUEST_SECONDS_BUCKETS,
            registry=r,
        )

    def on_model(self, model: str) -> None:
        labels = (_ENGINE, model)
        # Gauges are computed at scrape time from the requests in flight.
        self._num_running.labels(*labels).set_function(lambda: self.running_count(model))
        self._num_waiting.labels(*labels).set_function(lambda: self.waiting_count(model))
        self._kv_usage.labels(*labels).set_function(lambda: self.kv_usage(model))
        for family in (
            self._prefix_queries,
            self._prefix_hits,
            self._preemptions,
            self._prompt_tokens,
            self._generation_tokens,
            self._request_prompt_tokens,
            self._request_generation_tokens,
            self._ttft,
            self._itl,
            self._e2e,
            self._queue,
        ):
            family.labels(*labels)
        for reason in FINISHED_REASONS:
            self._success.labels(_ENGINE, reason, model)

    def on_first_token(self, model: str, prompt_tokens: int, ttft_s: float) -> None:
        labels = (_ENGINE, model)
        self._prompt_tokens.labels(*labels).inc(prompt_tokens)
        self._prefix_queries.labels(*labels).inc(prompt_tokens)
        self._ttft.labels(*labels).observe(ttft_s)

    def on_token(self, model: str, itl_s: float | None) -> None:
        labels = (_ENGINE, model)
        self._generation_tokens.labels(*labels).inc()
        if itl_s is not None:
            self._itl.labels(*labels).observe(itl_s)

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        labels = (_ENGINE, model)
        self._success.labels(_ENGINE, reason, model).inc()
        self._e2e.labels(*labels).observe(e2e_s)
        self._queue.labels(*labels).observe(request.queue_seconds)
        self._request_prompt_tokens.labels(*labels).observe(request.prompt_tokens)
        self._request_generation_tokens.labels(*labels).observe(request.generated)
