"""The engine kinds: how each one's own ``/metrics`` feeds the normalised series, and how
a kind is recognised when the config does not name it.

A kind maps normalised families (``names.NORMALISED``) to its own families, newest name
first (the first one present wins, so a server serving an old and a new name side by side
is never counted twice; to follow a future rename, add the new name in front). Each entry
says what the engine really measures, since the same name can mean different things: the
metric reference in the README is generated from these notes. A family a kind has no
equivalent for is left out here and so absent from its series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """The engine families that feed one normalised family, newest first, and what they
    measure on this kind."""

    names: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    title: str
    # Families of this kind start with one of these; also what is re-exposed of it.
    prefixes: tuple[str, ...]
    sources: Mapping[str, Source]
    # Labels the model name is read from, first present wins; none: model="".
    model_labels: tuple[str, ...] = ()
    # The label that tells the engine cores of one server apart, if the kind has one.
    index_label: str | None = None
    # Normalised extra label -> the kind's label it is read from.
    label_sources: Mapping[str, str] = field(default_factory=dict)
    # Where the kind serves its Prometheus text when not at /metrics.
    metrics_path: str = "/metrics"


def _s(*names: str, note: str = "") -> Source:
    return Source(tuple(names), note)


VLLM = KindSpec(
    name="vllm",
    title="vLLM (V0, V1 0.32, 0.33)",
    prefixes=("vllm:",),
    model_labels=("model_name",),
    index_label="engine",
    label_sources={"finished_reason": "finished_reason"},
    sources={
        "streamobs_engine_requests_running": _s("vllm:num_requests_running"),
        "streamobs_engine_requests_waiting": _s("vllm:num_requests_waiting"),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "vllm:kv_cache_usage_perc",
            "vllm:gpu_cache_usage_perc",
            note="V1 kv_cache_usage_perc, V0 gpu_cache_usage_perc; both 0 to 1",
        ),
        "streamobs_engine_prompt_tokens_total": _s("vllm:prompt_tokens_total"),
        "streamobs_engine_prompt_tokens_cached_total": _s(
            "vllm:prompt_tokens_cached_total", note="0.33 and later"
        ),
        "streamobs_engine_generation_tokens_total": _s("vllm:generation_tokens_total"),
        "streamobs_engine_preemptions_total": _s("vllm:num_preemptions_total"),
        "streamobs_engine_prefix_cache_queries_total": _s(
            "vllm:prefix_cache_queries_total",
            "vllm:gpu_prefix_cache_queries_total",
            note="V1 only (V0 has a hit-rate gauge)",
        ),
        "streamobs_engine_prefix_cache_hits_total": _s(
            "vllm:prefix_cache_hits_total",
            "vllm:gpu_prefix_cache_hits_total",
            note="V1 only",
        ),
        "streamobs_engine_request_success_total": _s(
            "vllm:request_success_total",
            note="finished_reason stop, length, abort, error, repetition; a request cut "
            "short by its client counts in none",
        ),
        "streamobs_engine_time_to_first_token_seconds": _s("vllm:time_to_first_token_seconds"),
        "streamobs_engine_inter_token_latency_seconds": _s(
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
            note="one observation per engine step and request: with speculative or "
            "multi-token steps one gap covers several tokens (V0 time_per_output_token_seconds)",
        ),
        "streamobs_engine_time_per_output_token_seconds": _s(
            "vllm:request_time_per_output_token_seconds",
            note="per request: decode time / (output tokens - 1)",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("vllm:e2e_request_latency_seconds"),
        "streamobs_engine_request_queue_time_seconds": _s("vllm:request_queue_time_seconds"),
        "streamobs_engine_request_prefill_time_seconds": _s(
            "vllm:request_prefill_time_seconds", note="scheduled to first token"
        ),
        "streamobs_engine_request_decode_time_seconds": _s(
            "vllm:request_decode_time_seconds", note="first token to last"
        ),
    },
)

SGLANG = KindSpec(
    name="sglang",
    title="SGLang (--enable-metrics)",
    prefixes=("sglang:",),
    model_labels=("model_name",),
    sources={
        "streamobs_engine_requests_running": _s("sglang:num_running_reqs"),
        "streamobs_engine_requests_waiting": _s("sglang:num_queue_reqs"),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "sglang:token_usage", note="share of the token (KV) pool in use, 0 to 1"
        ),
        "streamobs_engine_prompt_tokens_total": _s("sglang:prompt_tokens_total"),
        "streamobs_engine_prompt_tokens_cached_total": _s("sglang:cached_tokens_total"),
        "streamobs_engine_generation_tokens_total": _s("sglang:generation_tokens_total"),
        "streamobs_engine_preemptions_total": _s(
            "sglang:num_retracted_requests_total",
            note="requests retracted from the running batch when the KV pool ran out",
        ),
        "streamobs_engine_time_to_first_token_seconds": _s("sglang:time_to_first_token_seconds"),
        "streamobs_engine_inter_token_latency_seconds": _s(
            "sglang:inter_token_latency_seconds",
            note="per token: each gap is divided over the tokens it delivered and counted "
            "once per token, so _count is tokens and _sum/_count the mean per token",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("sglang:e2e_request_latency_seconds"),
        "streamobs_engine_request_queue_time_seconds": _s("sglang:queue_time_seconds"),
    },
)

TRTLLM = KindSpec(
    name="trtllm",
    title="TensorRT-LLM (trtllm-serve)",
    prefixes=("trtllm_",),
    model_labels=("model_name",),
    label_sources={"finished_reason": "finished_reason"},
    metrics_path="/prometheus/metrics",
    sources={
        "streamobs_engine_requests_running": _s("trtllm_num_requests_running"),
        "streamobs_engine_requests_waiting": _s("trtllm_num_requests_waiting"),
        "streamobs_engine_kv_cache_usage_ratio": _s("trtllm_kv_cache_utilization"),
        "streamobs_engine_prompt_tokens_total": _s("trtllm_prompt_tokens_total"),
        "streamobs_engine_generation_tokens_total": _s("trtllm_generation_tokens_total"),
        "streamobs_engine_request_success_total": _s("trtllm_request_success_total"),
        "streamobs_engine_time_to_first_token_seconds": _s("trtllm_time_to_first_token_seconds"),
        "streamobs_engine_time_per_output_token_seconds": _s(
            "trtllm_time_per_output_token_seconds"
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("trtllm_e2e_request_latency_seconds"),
        "streamobs_engine_request_queue_time_seconds": _s("trtllm_request_queue_time_seconds"),
    },
)

LLAMACPP = KindSpec(
    name="llamacpp",
    title="llama.cpp server (--metrics)",
    prefixes=("llamacpp:",),
    sources={
        "streamobs_engine_requests_running": _s(
            "llamacpp:requests_processing", note="slots busy with a request"
        ),
        "streamobs_engine_requests_waiting": _s(
            "llamacpp:requests_deferred", note="requests waiting for a free slot"
        ),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "llamacpp:kv_cache_usage_ratio", note="only servers that still expose it"
        ),
        "streamobs_engine_prompt_tokens_total": _s("llamacpp:prompt_tokens_total"),
        "streamobs_engine_generation_tokens_total": _s("llamacpp:tokens_predicted_total"),
    },
)

TGI = KindSpec(
    name="tgi",
    title="Hugging Face TGI",
    prefixes=("tgi_",),
    sources={
        "streamobs_engine_requests_running": _s(
            "tgi_batch_current_size", note="requests in the current batch"
        ),
        "streamobs_engine_requests_waiting": _s("tgi_queue_size"),
        "streamobs_engine_e2e_request_latency_seconds": _s("tgi_request_duration"),
        "streamobs_engine_request_queue_time_seconds": _s("tgi_request_queue_duration"),
    },
)

LITELLM = KindSpec(
    name="litellm",
    title="LiteLLM proxy (a gateway: it measures its backends)",
    prefixes=("litellm_",),
    model_labels=("model",),
    sources={
        "streamobs_engine_time_to_first_token_seconds": _s(
            "litellm_llm_api_time_to_first_token_metric",
            note="the gateway's view of its backend: request sent to first chunk received",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s(
            "litellm_request_total_latency_metric", note="through the gateway, whole request"
        ),
    },
)

KINDS: tuple[KindSpec, ...] = (VLLM, SGLANG, TRTLLM, LLAMACPP, TGI, LITELLM)
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
_BY_NAME = {k.name: k for k in KINDS}

# Families no kind owns that would clash with streamobs' own (process and Python runtime
# series of the engine process): never re-exposed from an exposition of unknown kind.
_NEVER_REEXPOSED = ("process_", "python_", "streamobs_")


def kind_spec(name: str) -> KindSpec:
    return _BY_NAME[name]


@dataclass(frozen=True, slots=True)
class Detection:
    """The kind an exposition is of, or why none could be told (``kind`` None)."""

    kind: str | None
    reason: str = ""


def detect(names: Iterable[str]) -> Detection:
    """The kind whose prefix the families carry. Several kinds (a proxy that merges two
    servers' text) or none is no guess: the caller says so and still re-exposes."""
    found = sorted({k.name for name in names for k in KINDS if name.startswith(k.prefixes)})
    if len(found) == 1:
        return Detection(found[0])
    if found:
        return Detection(None, f"families of several engine kinds ({', '.join(found)}): set kind")
    known = ", ".join(prefix for k in KINDS for prefix in k.prefixes)
    return Detection(None, f"no family of a known engine kind (prefixes {known}): set kind")


def reexposed(name: str, kind: str | None) -> bool:
    """Whether a family is re-exposed: the kind's own, or on an exposition of unknown
    kind everything that cannot clash with streamobs' own series."""
    if kind is None:
        return not name.startswith(_NEVER_REEXPOSED)
    return name.startswith(_BY_NAME[kind].prefixes)
