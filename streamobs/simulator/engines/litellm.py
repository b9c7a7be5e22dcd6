"""LiteLLM proxy 1.110.2 /metrics series, fed by what the simulator actually served.

Names, HELP strings, types, labels and bucket edges are LiteLLM's own
(``litellm/integrations/prometheus.py``, ``PrometheusLogger``, and the in-flight
middleware; see ``tests/data/litellm/``): the proxy seen in front of one deployment of
each model, called with the proxy's master key by one client. Label values are fixed and
small; ``hashed_api_key`` is the literal LiteLLM writes for the master key, never a key.
"""

from __future__ import annotations

import hashlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamobs.simulator.engines.base import EngineMetrics, Running

# LATENCY_BUCKETS (litellm/types/integrations/prometheus.py), +Inf included there.
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 420.0, 600.0, float("inf"),
)  # fmt: skip

_LATENCY = (
    "model_group", "model", "hashed_api_key", "api_key_alias", "team", "team_alias",
    "requested_model", "end_user", "user", "model_id", "api_provider", "service_tier",
    "org_id", "org_alias",
)  # fmt: skip
_TOTAL_LATENCY = (
    "model_group", "end_user", "hashed_api_key", "api_key_alias", "requested_model", "team",
    "team_alias", "user", "model", "model_id", "api_provider", "service_tier", "org_id",
    "org_alias",
)  # fmt: skip
_QUEUE = (
    "api_key_alias", "api_provider", "end_user", "hashed_api_key", "model", "model_id",
    "org_alias", "org_id", "requested_model", "team", "team_alias", "user",
)  # fmt: skip
_TOKENS = (
    "end_user", "hashed_api_key", "api_key_alias", "model", "team", "team_alias", "user",
    "user_email", "requested_model", "model_id", "api_provider", "org_id", "org_alias",
)  # fmt: skip
_PROXY_REQUESTS = (
    "end_user", "hashed_api_key", "api_key_alias", "requested_model", "team", "team_alias",
    "user", "status_code", "user_email", "route", "client_ip", "user_agent", "model_id",
    "api_provider", "org_id", "org_alias",
)  # fmt: skip
_REQUESTS = (
    "end_user", "hashed_api_key", "api_key_alias", "model", "team", "team_alias", "user",
    "user_email", "client_ip", "user_agent", "requested_model", "model_id", "api_provider",
    "org_id", "org_alias",
)  # fmt: skip
_DEPLOYMENT_REQUESTS = (
    "model_group", "requested_model", "litellm_model_name", "model_id", "api_base",
    "api_provider", "hashed_api_key", "api_key_alias", "team", "team_alias", "client_ip",
    "user_agent",
)  # fmt: skip
_DEPLOYMENT_LATENCY = (
    "model_group", "litellm_model_name", "model_id", "api_base", "api_provider",
    "hashed_api_key", "api_key_alias", "team", "team_alias", "org_id", "org_alias",
)  # fmt: skip
_DEPLOYMENT_STATE = ("litellm_model_name", "model_id", "api_base", "api_provider")

# What a proxy without teams, users or key aliases writes ("None" for an absent value).
_FIXED = {
    "hashed_api_key": "litellm_proxy_master_key",
    "api_key_alias": "None",
    "team": "None",
    "team_alias": "None",
    "end_user": "None",
    "user": "default_user_id",
    "user_email": "None",
    "org_id": "None",
    "org_alias": "None",
    "service_tier": "None",
    "api_provider": "openai",
    "api_base": "http://127.0.0.1:8000/v1",
    "client_ip": "127.0.0.1",
    "user_agent": "streamobs",
    "route": "/v1/chat/completions",
    "status_code": "200",
}


def _values(names: tuple[str, ...], model: str) -> dict[str, str]:
    per_model = {
        "model": model,
        "model_group": model,
        "requested_model": model,
        "litellm_model_name": model,
        "model_id": hashlib.sha256(model.encode()).hexdigest(),
    }
    return {name: per_model.get(name) or _FIXED[name] for name in names}


class LitellmMetrics(EngineMetrics):
    """The LiteLLM proxy's request, latency, token and in-flight families."""

    kind = "litellm"

    def declare(self, r: CollectorRegistry) -> None:
        self._proxy_total = Counter(
            "litellm_proxy_total_requests_metric",
            "Total number of requests made to the proxy server - track number of client "
            "side requests",
            _PROXY_REQUESTS,
            registry=r,
        )
        self._total_latency = Histogram(
            "litellm_request_total_latency_metric",
            "End-to-end latency (seconds) for a request to LiteLLM Proxy Server, from the "
            "moment the request reached the proxy through the end of processing -- includes "
            "authentication, pre-call hooks, the LLM API call, and post-call processing",
            _TOTAL_LATENCY,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._api_latency = Histogram(
            "litellm_llm_api_latency_metric",
            "Total latency (seconds) for a models LLM API call",
            _LATENCY,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._queue = Histogram(
            "litellm_request_queue_time_seconds",
            "Time (seconds) from request arrival at the proxy to the start of pre-call "
            "processing -- includes authentication and any ASGI-level queueing",
            _QUEUE,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "litellm_llm_api_time_to_first_token_metric",
            "Time to first token for a models LLM API call",
            _LATENCY,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._total_tokens = Counter(
            "litellm_total_tokens_metric",
            "Total number of input + output tokens from LLM requests",
            _TOKENS,
            registry=r,
        )
        self._input_tokens = Counter(
            "litellm_input_tokens_metric",
            "Total number of input tokens from LLM requests",
            _TOKENS,
            registry=r,
        )
        self._output_tokens = Counter(
            "litellm_output_tokens_metric",
            "Total number of output tokens from LLM requests",
            _TOKENS,
            registry=r,
        )
        self._deployment_state = Gauge(
            "litellm_deployment_state",
            "LLM Deployment Analytics - The state of the deployment: 0 = healthy, 1 = partial "
            "outage, 2 = complete outage",
            _DEPLOYMENT_STATE,
            registry=r,
        )
        self._deployment_success = Counter(
            "litellm_deployment_success_responses",
            "LLM Deployment Analytics - Total number of successful LLM API calls via litellm",
            _DEPLOYMENT_REQUESTS,
            registry=r,
        )
        self._deployment_total = Counter(
            "litellm_deployment_total_requests",
            "LLM Deployment Analytics - Total number of LLM API calls via litellm - success + "
            "failure",
            _DEPLOYMENT_REQUESTS,
            registry=r,
        )
        # prometheus_client's default buckets: LiteLLM passes none.
        self._latency_per_token = Histogram(
            "litellm_deployment_latency_per_output_token",
            "LLM Deployment Analytics - Latency per output token",
            _DEPLOYMENT_LATENCY,
            registry=r,
        )
        self._requests = Counter(
            "litellm_requests_metric",
            "deprecated - use litellm_proxy_total_requests_metric. Total number of LLM calls "
            "to litellm - track total per API Key, team, user",
            _REQUESTS,
            registry=r,
        )
        self._in_flight = Gauge(
            "litellm_in_flight_requests",
            "Number of HTTP requests currently in-flight on this uvicorn worker",
            registry=r,
        )
        # Every HTTP request is in flight, the scrape itself included.
        self._in_flight.set_function(self._http_in_flight)

    def _http_in_flight(self) -> int:
        with self._lock:
            models = list(self._models)
        return 1 + sum(self.running_count(m) + self.waiting_count(m) for m in models)

    def on_model(self, model: str) -> None:
        self._deployment_state.labels(**_values(_DEPLOYMENT_STATE, model)).set(0)

    def on_first_token(self, model: str, prompt_tokens: int, ttft_s: float) -> None:
        # Streaming requests only: API call start -> first chunk.
        self._ttft.labels(**_values(_LATENCY, model)).observe(ttft_s)

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        """A successful call, logged once its stream ended (the error path is not fed)."""
        if reason == "error":
            return
        self._api_latency.labels(**_values(_LATENCY, model)).observe(e2e_s)
        # The proxy's own queue; the simulated engine's stands in for it.
        self._queue.labels(**_values(_QUEUE, model)).observe(request.queue_seconds)
        self._total_latency.labels(**_values(_TOTAL_LATENCY, model)).observe(e2e_s)
        tokens = _values(_TOKENS, model)
        self._input_tokens.labels(**tokens).inc(request.prompt_tokens)
        self._output_tokens.labels(**tokens).inc(request.generated)
        self._total_tokens.labels(**tokens).inc(request.prompt_tokens + request.generated)
        self._proxy_total.labels(**_values(_PROXY_REQUESTS, model)).inc()
        self._requests.labels(**_values(_REQUESTS, model)).inc()
        deployment = _values(_DEPLOYMENT_REQUESTS, model)
        self._deployment_success.labels(**deployment).inc()
        self._deployment_total.labels(**deployment).inc()
        if request.generated > 0:
            # Streams: the time to the first chunk over the output tokens.
            ttft_s = request.queue_seconds + (request.prefill_seconds or 0.0)
            self._latency_per_token.labels(**_values(_DEPLOYMENT_LATENCY, model)).observe(
                ttft_s / request.generated
            )
