"""The normalised engine series: one family set, whatever the engine kind that feeds it.

Each family has one meaning on every kind (``kinds.py`` says, per kind, which of the
engine's own families feeds it and how that engine measures it); a kind that lacks the
concept leaves the family absent rather than filling it with something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class NormalisedSpec:
    """One streamobs series. ``name`` is the exposed name (counters end in ``_total``);
    ``extra_labels`` are kept besides ``model`` and ``engine_index``. When dropping an
    engine's other labels leaves two series with the same labels they are merged: summed,
    or for a ratio the largest is kept."""

    name: str
    kind: Kind
    documentation: str
    extra_labels: tuple[str, ...] = ()
    merge: Literal["sum", "max"] = "sum"


# Those vLLM 0.32 already had first, in their order then; the newer ones after.
NORMALISED: tuple[NormalisedSpec, ...] = (
    NormalisedSpec(
        "streamobs_engine_requests_running",
        "gauge",
        "Requests in the engine's running batch (being prefilled or decoded).",
    ),
    NormalisedSpec(
        "streamobs_engine_requests_waiting",
        "gauge",
        "Requests waiting in the engine's queue for a place in the batch.",
    ),
    NormalisedSpec(
        "streamobs_engine_kv_cache_usage_ratio",
        "gauge",
        "KV-cache usage, 0 to 1.",
        merge="max",
    ),
    NormalisedSpec(
        "streamobs_engine_prompt_tokens_total",
        "counter",
        "Prompt (prefill) tokens processed by the engine.",
    ),
    NormalisedSpec(
        "streamobs_engine_generation_tokens_total",
        "counter",
        "Generation (output) tokens produced by the engine.",
    ),
    NormalisedSpec(
        "streamobs_engine_preemptions_total",
        "counter",
        "Running requests the engine's scheduler evicted (preempted, retracted) to free "
        "KV cache; they are computed again later.",
    ),
    NormalisedSpec(
        "streamobs_engine_prefix_cache_queries_total",
        "counter",
        "Prefix-cache queries, in tokens.",
    ),
    NormalisedSpec(
        "streamobs_engine_prefix_cache_hits_total",
        "counter",
        "Prefix-cache hits, in tokens.",
    ),
    NormalisedSpec(
        "streamobs_engine_request_success_total",
        "counter",
        "Requests the engine finished, by finished_reason (stop, length, abort, ...).",
        extra_labels=("finished_reason",),
    ),
    NormalisedSpec(
        "streamobs_engine_time_to_first_token_seconds",
        "histogram",
        "The engine's own time to first token (arrival to first output token), in seconds.",
    ),
    NormalisedSpec(
        "streamobs_engine_inter_token_latency_seconds",
        "histogram",
        "The engine's own time between output tokens, in seconds (per engine step on vLLM, "
        "per token on SGLang: see the metric reference).",
    ),
    NormalisedSpec(
        "streamobs_engine_e2e_request_latency_seconds",
        "histogram",
        "The engine's own end-to-end request latency, arrival to last token, in seconds.",
    ),
    NormalisedSpec(
        "streamobs_engine_request_queue_time_seconds",
        "histogram",
        "Time requests spent waiting in the engine's queue, in seconds.",
    ),
    NormalisedSpec(
        "streamobs_engine_prompt_tokens_cached_total",
        "counter",
        "Prompt tokens served from the engine's prefix cache instead of being computed.",
    ),
    NormalisedSpec(
        "streamobs_engine_time_per_output_token_seconds",
        "histogram",
        "Per request: decode time divided by the output tokens after the first, in seconds.",
    ),
    NormalisedSpec(
        "streamobs_engine_request_prefill_time_seconds",
        "histogram",
        "Time requests spent in prefill (scheduled to first token), in seconds.",
    ),
    NormalisedSpec(
        "streamobs_engine_request_decode_time_seconds",
        "histogram",
        "Time requests spent in decode (first token to last), in seconds.",
    ),
)

NORMALISED_BY_NAME: dict[str, NormalisedSpec] = {spec.name: spec for spec in NORMALISED}

# Labels every normalised series carries, before a spec's extra labels: the engine's model
# name and its engine core index (vLLM V1's ``engine``; "0" where the kind has none).
# ``engine`` (the configured engine's name) and ``kind`` are added on export.
SERIES_LABELS: tuple[str, ...] = ("model", "engine_index")

# Where a kind has no engine index (vLLM V0, every other kind): one engine per server.
DEFAULT_ENGINE = "0"
