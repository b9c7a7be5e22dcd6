"""vLLM 0.32 (V1 engine) /metrics series, fed by what the simulator actually served.

Names, HELP strings, labels and bucket edges are those of a real vLLM 0.32 scrape, so
dashboards, alert rules and the vLLM collector can be exercised against the simulator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# vLLM's finished_reason children, all present from the start.
FINISHED_REASONS: tuple[str, ...] = ("stop", "length", "abort", "error", "repetition")

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


@dataclass
class _Running:
    prompt_tokens: int
    generated: int
    queue_seconds: float


class EngineMetrics:
    """A dedicated registry with the vLLM series; thread-safe."""

    def __init__(self, kv_cache_tokens: int) -> None:
        # The simulated KV cache size: usage is the tokens held by running requests.
        self.kv_cache_tokens = kv_cache_tokens
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._running: dict[str, dict[str, _Running]] = {}
        self._waiting: dict[str, int] = {}
        self._models: set[str] = set()
        r = self.registry
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

    def add_model(self, model: str) -> None:
        """Create every child for `model`, so its series exist before the first request."""
        with self._lock:
            if model in self._models:
                return
            self._models.add(model)
            self._running.setdefault(model, {})
        labels = (_ENGINE, model)
        # Gauges are computed at scrape time from the requests in flight.
        self._num_running.labels(*labels).set_function(lambda: self._count_running(model))
        self._num_waiting.labels(*labels).set_function(lambda: self._count_waiting(model))
        self._kv_usage.labels(*labels).set_function(lambda: self._kv_usage_of(model))
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

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def waiting_started(self, model: str) -> None:
        self.add_model(model)
        with self._lock:
            self._waiting[model] = self._waiting.get(model, 0) + 1

    def waiting_ended(self, model: str) -> None:
        with self._lock:
            self._waiting[model] -= 1

    def admitted(self, model: str, request_id: str, prompt_tokens: int, queue_s: float) -> None:
        self.add_model(model)
        with self._lock:
            self._running[model][request_id] = _Running(prompt_tokens, 0, queue_s)

    def first_token(self, model: str, prompt_tokens: int, ttft_s: float) -> None:
        """Prefill is done: the prompt counts as processed and the TTFT is known."""
        labels = (_ENGINE, model)
        self._prompt_tokens.labels(*labels).inc(prompt_tokens)
        self._prefix_queries.labels(*labels).inc(prompt_tokens)
        self._ttft.labels(*labels).observe(ttft_s)

    def token(self, model: str, request_id: str, itl_s: float | None) -> None:
        labels = (_ENGINE, model)
        with self._lock:
            self._running[model][request_id].generated += 1
        self._generation_tokens.labels(*labels).inc()
        if itl_s is not None:
            self._itl.labels(*labels).observe(itl_s)

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        """The request left the engine; `finished_reason` None means it did not finish.

        Like vLLM 0.32, a request cut short (client gone, connection dropped) counts in
        no finished_reason at all, not in "abort".
        """
        with self._lock:
            running = self._running[model].pop(request_id)
        if finished_reason is None:
            return
        labels = (_ENGINE, model)
        self._success.labels(_ENGINE, finished_reason, model).inc()
        self._e2e.labels(*labels).observe(e2e_s)
        self._queue.labels(*labels).observe(running.queue_seconds)
        self._request_prompt_tokens.labels(*labels).observe(running.prompt_tokens)
        self._request_generation_tokens.labels(*labels).observe(running.generated)

    def busy(self) -> bool:
        """Whether any request is running (being generated for)."""
        with self._lock:
            return any(self._running.values())

    def _count_running(self, model: str) -> int:
        with self._lock:
            return len(self._running.get(model, {}))

    def _count_waiting(self, model: str) -> int:
        with self._lock:
            return self._waiting.get(model, 0)

    def _kv_usage_of(self, model: str) -> float:
        with self._lock:
            held = sum(r.prompt_tokens + r.generated for r in self._running.get(model, {}).values())
        return min(1.0, held / self.kv_cache_tokens)
