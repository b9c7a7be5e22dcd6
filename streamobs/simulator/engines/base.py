"""What every simulated engine's ``/metrics`` is fed by: the requests the simulator served.

The simulator reports each request's life (queued, admitted, first token, each token,
finished) to one ``EngineMetrics``; a subclass per engine kind turns those events into
that engine's own families (names, HELP strings, labels, bucket edges as the real engine
serves them), so the collectors, dashboards and alert rules can be exercised on each kind.
This base keeps the state every kind derives its gauges from.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest

# Reasons a request can finish with; kinds that count finished requests by reason create
# every child up front.
FINISHED_REASONS: tuple[str, ...] = ("stop", "length", "abort", "error", "repetition")


@dataclass
class Running:
    """A request admitted to the running batch."""

    prompt_tokens: int
    generated: int
    queue_seconds: float
    prefill_seconds: float | None = None  # admitted to first token, once known


class EngineMetrics:
    """A dedicated registry fed by request events; thread-safe. Subclasses declare their
    families in ``declare`` and fill them in the ``on_*`` hooks; gauges read the state
    through ``running_count``, ``waiting_count`` and ``kv_usage``."""

    kind = ""
    # Where the engine serves its Prometheus text.
    metrics_path = "/metrics"

    def __init__(self, kv_cache_tokens: int) -> None:
        # The simulated KV cache size: usage is the tokens held by running requests.
        self.kv_cache_tokens = kv_cache_tokens
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._running: dict[str, dict[str, Running]] = {}
        self._waiting: dict[str, int] = {}
        self._models: set[str] = set()
        self.declare(self.registry)

    # -- what a kind implements ----------------------------------------------------------
    def declare(self, registry: CollectorRegistry) -> None:
        """Create the kind's families in ``registry``."""
        raise NotImplementedError

    def on_model(self, model: str) -> None:
        """Create ``model``'s children, so its series exist before its first request."""

    def on_first_token(self, model: str, prompt_tokens: int, ttft_s: float) -> None:
        """Prefill is done: the prompt is processed and the TTFT known."""

    def on_token(self, model: str, itl_s: float | None) -> None:
        """One more generated token; ``itl_s`` is the gap since the previous one."""

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        """The request finished (``reason`` as vLLM names it: stop, length, ...)."""

    # -- what the simulator calls ----------------------------------------------------------
    def add_model(self, model: str) -> None:
        with self._lock:
            if model in self._models:
                return
            self._models.add(model)
            self._running.setdefault(model, {})
        self.on_model(model)

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
            self._running[model][request_id] = Running(prompt_tokens, 0, queue_s)

    def first_token(self, model: str, request_id: str, prompt_tokens: int, ttft_s: float) -> None:
        with self._lock:
            request = self._running[model][request_id]
            request.prefill_seconds = max(0.0, ttft_s - request.queue_seconds)
        self.on_first_token(model, prompt_tokens, ttft_s)

    def token(self, model: str, request_id: str, itl_s: float | None) -> None:
        with self._lock:
            self._running[model][request_id].generated += 1
        self.on_token(model, itl_s)

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        """The request left the engine; ``finished_reason`` None means it did not finish.

        Like vLLM 0.32, a request cut short (client gone, connection dropped) counts in
        no finished_reason at all, not in "abort".
        """
        with self._lock:
            request = self._running[model].pop(request_id)
        if finished_reason is not None:
            self.on_finished(model, finished_reason, e2e_s, request)

    def busy(self) -> bool:
        """Whether any request is running (being generated for)."""
        with self._lock:
            return any(self._running.values())

    # -- state for the gauges ------------------------------------------------------------
    def running_count(self, model: str) -> int:
        with self._lock:
            return len(self._running.get(model, {}))

    def waiting_count(self, model: str) -> int:
        with self._lock:
            return self._waiting.get(model, 0)

    def kv_usage(self, model: str) -> float:
        """Share of the KV cache held by the running requests' tokens, 0 to 1."""
        return min(1.0, self.kv_tokens_used(model) / self.kv_cache_tokens)

    def kv_tokens_used(self, model: str) -> int:
        with self._lock:
            return sum(r.prompt_tokens + r.generated for r in self._running.get(model, {}).values())
