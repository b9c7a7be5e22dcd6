"""The one table that maps vLLM's metric names, old and new, to streamobs' stable names.

vLLM renamed series between releases: the V0 engine (``vllm/engine/metrics.py``) has no
``engine`` label and calls KV-cache usage ``gpu_cache_usage_perc`` and inter-token latency
``time_per_output_token_seconds``; the V1 engine (``vllm/v1/metrics/loggers.py``) adds
``engine``, renamed both, and for a few releases served the old and the new name side by
side. Sources are listed newest first and the first one present wins, so a server that
serves both is never counted twice. To follow a future rename, add the new name in front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class NormalisedSpec:
    """One streamobs series fed by one of several vLLM names.

    ``name`` is the exposed name (counters end in ``_total``); ``sources`` are vLLM's names
    as they appear on its ``/metrics`` page; ``extra_labels`` are vLLM labels kept besides
    ``model`` and ``engine``. When dropping vLLM's other labels leaves two series with the
    same labels they are merged: summed, or for a ratio the largest is kept.
    """

    name: str
    kind: Kind
    documentation: str
    sources: tuple[str, ...]
    extra_labels: tuple[str, ...] = ()
    merge: Literal["sum", "max"] = "sum"


NORMALISED: tuple[NormalisedSpec, ...] = (
    NormalisedSpec(
        "streamobs_engine_requests_running",
        "gauge",
        "Requests in vLLM's running batch.",
        ("vllm:num_requests_running",),
    ),
    NormalisedSpec(
        "streamobs_engine_requests_waiting",
        "gauge",
        "Requests waiting in vLLM's queue.",
        ("vllm:num_requests_waiting",),
    ),
    NormalisedSpec(
        "streamobs_engine_kv_cache_usage_ratio",
        "gauge",
        "KV-cache usage, 0 to 1 (V0 gpu_cache_usage_perc, V1 kv_cache_usage_perc).",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        merge="max",
    ),
    NormalisedSpec(
        "streamobs_engine_prompt_tokens_total",
        "counter",
        "Prompt (prefill) tokens processed by vLLM.",
        ("vllm:prompt_tokens_total",),
    ),
    NormalisedSpec(
        "streamobs_engine_generation_tokens_total",
        "counter",
        "Generation (output) tokens produced by vLLM.",
        ("vllm:generation_tokens_total",),
    ),
    NormalisedSpec(
        "streamobs_engine_preemptions_total",
        "counter",
        "Requests preempted by vLLM's scheduler.",
        ("vllm:num_preemptions_total",),
    ),
    NormalisedSpec(
        "streamobs_engine_prefix_cache_queries_total",
        "counter",
        "Prefix-cache queries, in tokens (absent on V0, which only exposes a hit-rate gauge).",
        ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    ),
    NormalisedSpec(
        "streamobs_engine_prefix_cache_hits_total",
        "counter",
        "Prefix-cache hits, in tokens (absent on V0, which only exposes a hit-rate gauge).",
        ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    ),
    NormalisedSpec(
        "streamobs_engine_request_success_total",
        "counter",
        "Requests vLLM finished, by finished_reason.",
        ("vllm:request_success_total",),
        extra_labels=("finished_reason",),
    ),
    NormalisedSpec(
        "streamobs_engine_time_to_first_token_seconds",
        "histogram",
        "vLLM's own time to first token, in seconds.",
        ("vllm:time_to_first_token_seconds",),
    ),
    NormalisedSpec(
        "streamobs_engine_inter_token_latency_seconds",
        "histogram",
        "vLLM's own inter-token latency, in seconds "
        "(V0 time_per_output_token_seconds, V1 inter_token_latency_seconds).",
        ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    ),
    NormalisedSpec(
        "streamobs_engine_e2e_request_latency_seconds",
        "histogram",
        "vLLM's own end-to-end request latency, in seconds.",
        ("vllm:e2e_request_latency_seconds",),
    ),
    NormalisedSpec(
        "streamobs_engine_request_queue_time_seconds",
        "histogram",
        "Time requests spent waiting in vLLM's queue, in seconds.",
        ("vllm:request_queue_time_seconds",),
    ),
)

# Labels every normalised series carries, before a spec's extra labels: vLLM's model name
# and its engine core index (V1 ``engine``). ``engine``, the configured engine's name, is
# added on export; the snapshot does not know what the engine is called.
SERIES_LABELS: tuple[str, ...] = ("model", "engine_index")

# V0 has no engine label; it only ever ran one engine per server.
DEFAULT_ENGINE = "0"
