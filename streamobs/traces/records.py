"""What one ``llm_request`` span says about one request, as vLLM names it.

Attribute names are exactly those of vLLM's span (``gen_ai.latency.*`` in seconds, from the
request's arrival at the server; ``gen_ai.usage.*`` integers): see the captured span in
``tests/data/vllm-0.32-cpu/otlp-traces/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LLM_REQUEST: Final = "llm_request"
QUEUE: Final = "gen_ai.latency.time_in_queue"
TTFT: Final = "gen_ai.latency.time_to_first_token"
PREFILL: Final = "gen_ai.latency.time_in_model_prefill"
DECODE: Final = "gen_ai.latency.time_in_model_decode"
INFERENCE: Final = "gen_ai.latency.time_in_model_inference"
E2E: Final = "gen_ai.latency.e2e"
PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
REQUEST_ID: Final = "gen_ai.request.id"
MAX_TOKENS: Final = "gen_ai.request.max_tokens"
TOP_P: Final = "gen_ai.request.top_p"
TEMPERATURE: Final = "gen_ai.request.temperature"
N: Final = "gen_ai.request.n"
SECONDS_ATTRIBUTES: Final = (QUEUE, TTFT, PREFILL, DECODE, INFERENCE, E2E)
TOKEN_ATTRIBUTES: Final = (PROMPT_TOKENS, COMPLETION_TOKENS)


@dataclass(frozen=True, slots=True)
class ServerSpan:
    """One request as the server saw it: seconds from its arrival (None when the span
    lacks the attribute), token counts from the server's usage, ids as lower-case hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_unix_ns: int
    end_unix_ns: int
    request_id: str | None = None  # vLLM: chatcmpl- (or cmpl-) + the X-Request-Id sent
    queue_seconds: float | None = None
    ttft_seconds: float | None = None
    prefill_seconds: float | None = None
    decode_seconds: float | None = None
    inference_seconds: float | None = None
    e2e_seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    service_name: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "request_id": self.request_id,
            "seconds": {
                "queue": self.queue_seconds,
                "ttft": self.ttft_seconds,
                "prefill": self.prefill_seconds,
                "decode": self.decode_seconds,
                "inference": self.inference_seconds,
                "e2e": self.e2e_seconds,
            },
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass(frozen=True, slots=True)
class ServerTiming:
    """A probe and its own server span: ``path_seconds`` is client TTFT - server TTFT of
    the same request (the network and whatever proxies sit on the path), None when either
    is missing."""

    span: ServerSpan
    path_seconds: float | None


def server_timing(client_ttft_ns: int | None, span: ServerSpan) -> ServerTiming:
    path = None
    if client_ttft_ns is not None and span.ttft_seconds is not None:
        path = client_ttft_ns / 1e9 - span.ttft_seconds
    return ServerTiming(span, path)
