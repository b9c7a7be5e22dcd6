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
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Source:
    """The engine families that feed one normalised family, newest first, and what they
    measure on this kind. ``histogram_sum``: a counter read from a histogram's ``_sum``
    (TGI counts tokens only as per-request histograms; their sum is the total)."""

    names: tuple[str, ...]
    note: str = ""
    histogram_sum: bool = False
    # Series kept: those with every (label, value) of ``only`` and none of ``exclude``.
    only: tuple[tuple[str, str], ...] = ()
    exclude: tuple[tuple[str, str], ...] = ()
    # When the engine may serve no such family although the kind has it ("until the
    # first retraction"): no data is then no fault, and dashboards say so.
    absent_when: str = ""

    def keeps(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.only) and not any(
            labels.get(k) == v for k, v in self.exclude
        )


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
    # Why a family is absent where the kind has something that looks like it but is not.
    absent: Mapping[str, str] = field(default_factory=dict)


def _s(
    *names: str,
    note: str = "",
    histogram_sum: bool = False,
    only: tuple[tuple[str, str], ...] = (),
    exclude: tuple[tuple[str, str], ...] = (),
    absent_when: str = "",
) -> Source:
    return Source(tuple(names), note, histogram_sum, only, exclude, absent_when)


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

_SGLANG = KindSpec(
    name="sglang",
    title="SGLang (--enable-metrics)",
    prefixes=("sglang:", "sglang_"),
    model_labels=("model_name",),
    absent={
        "streamobs_engine_request_success_total": "sglang:num_requests_total counts "
        "finished requests without a reason",
        "streamobs_engine_request_decode_time_seconds": "no per-request decode time",
    },
    sources={
        "streamobs_engine_requests_running": _s(
            "sglang:num_running_reqs",
            note="as of the scheduler's last stats log (each prefill batch, every 40 "
            "decode steps, when idle)",
        ),
        "streamobs_engine_requests_waiting": _s(
            "sglang:num_queue_reqs", note="as requests running: as of the last stats log"
        ),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "sglang:full_token_usage",
            "sglang:token_usage",
            note="share of the full-attention KV pool in use, 0 to 1 (token_usage, "
            "rounded to 2 decimals, where full_token_usage is absent)",
        ),
        "streamobs_engine_prompt_tokens_total": _s(
            "sglang:prompt_tokens_total", note="added when the request finishes"
        ),
        "streamobs_engine_prompt_tokens_cached_total": _s(
            "sglang:cached_tokens_total",
            note="summed over cache_source (device, host, storage)",
            exclude=(("cache_source", "total"),),
        ),
        "streamobs_engine_generation_tokens_total": _s(
            "sglang:generation_tokens_total", note="added when the request finishes"
        ),
        "streamobs_engine_preemptions_total": _s(
            "sglang:num_retracted_requests_total",
            note="requests retracted from the running batch when the KV pool ran out",
            absent_when="until the first retraction",
        ),
        "streamobs_engine_time_to_first_token_seconds": _s(
            "sglang:time_to_first_token_seconds",
            note="arrival at the tokenizer manager to first output (tokenization, queue "
            "and prefill included); aborted requests not observed",
        ),
        "streamobs_engine_inter_token_latency_seconds": _s(
            "sglang:inter_token_latency_seconds",
            note="per token: each gap is divided over the tokens it delivered and counted "
            "once per token, so _count is tokens and _sum/_count the mean per token",
        ),
        "streamobs_engine_time_per_output_token_seconds": _s(
            "sglang:request_time_per_output_token_seconds",
            note="per request finished with stop or length: (finish - first token) / "
            "(output tokens - 1)",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("sglang:e2e_request_latency_seconds"),
        "streamobs_engine_request_queue_time_seconds": _s(
            "sglang:queue_time_seconds", note="waiting queue to first forward"
        ),
        "streamobs_engine_request_prefill_time_seconds": _s(
            "sglang:per_stage_req_latency_seconds",
            note='its stage="prefill_forward" series',
            only=(("stage", "prefill_forward"),),
        ),
    },
)

# Older SGLang releases named their families sglang_x where newer ones say sglang:x: both
# spellings feed the same series, the new one first.
SGLANG = replace(
    _SGLANG,
    sources={
        name: replace(
            source,
            names=tuple(
                spelling
                for n in source.names
                for spelling in (n, n.replace("sglang:", "sglang_", 1))
            ),
        )
        for name, source in _SGLANG.sources.items()
    },
)

TRTLLM = KindSpec(
    name="trtllm",
    title="TensorRT-LLM (trtllm-serve)",
    prefixes=("trtllm_",),
    model_labels=("model_name",),
    label_sources={"finished_reason": "finished_reason"},
    metrics_path="/prometheus/metrics",
    absent={
        "streamobs_engine_inter_token_latency_seconds": "no per-token histogram; "
        "trtllm_iteration_latency_seconds is a gauge of one engine step",
    },
    sources={
        "streamobs_engine_requests_running": _s(
            "trtllm_num_requests_running",
            note="from the last engine iteration, updated when a request completes",
        ),
        "streamobs_engine_requests_waiting": _s(
            "trtllm_num_requests_waiting", note="as requests running: per completion"
        ),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "trtllm_kv_cache_utilization", note="used / max KV blocks, 0 to 1"
        ),
        "streamobs_engine_prompt_tokens_total": _s(
            "trtllm_prompt_tokens_total", note="counted when a request finishes"
        ),
        "streamobs_engine_prompt_tokens_cached_total": _s("trtllm_prompt_cached_tokens_total"),
        "streamobs_engine_generation_tokens_total": _s(
            "trtllm_generation_tokens_total", note="counted when a request finishes"
        ),
        "streamobs_engine_request_success_total": _s(
            "trtllm_request_success_total",
            note="finished_reason stop, length, timeout, cancelled; a stream whose client "
            "left counts in none",
        ),
        "streamobs_engine_time_to_first_token_seconds": _s("trtllm_time_to_first_token_seconds"),
        "streamobs_engine_time_per_output_token_seconds": _s(
            "trtllm_time_per_output_token_seconds",
            note="per request: (last token - first token) / (output tokens - 1); no "
            "per-token inter-token latency exists",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("trtllm_e2e_request_latency_seconds"),
        "streamobs_engine_request_queue_time_seconds": _s(
            "trtllm_request_queue_time_seconds", note="arrival to first scheduled"
        ),
        "streamobs_engine_request_prefill_time_seconds": _s(
            "trtllm_request_prefill_time_seconds", note="first scheduled to first token"
        ),
        "streamobs_engine_request_decode_time_seconds": _s(
            "trtllm_request_decode_time_seconds", note="first token to last"
        ),
    },
)

LLAMACPP = KindSpec(
    name="llamacpp",
    title="llama.cpp server (--metrics)",
    prefixes=("llamacpp:",),
    absent={
        "streamobs_engine_time_to_first_token_seconds": "no latency histograms: "
        "prompt_seconds_total and tokens_predicted_seconds_total are cumulative processing "
        "times (rate(seconds) / rate(tokens) is a mean per token)",
        "streamobs_engine_request_success_total": "no finished-request counter",
    },
    sources={
        "streamobs_engine_requests_running": _s(
            "llamacpp:requests_processing", note="slots busy with a request"
        ),
        "streamobs_engine_requests_waiting": _s(
            "llamacpp:requests_deferred", note="requests waiting for a free slot"
        ),
        "streamobs_engine_kv_cache_usage_ratio": _s(
            "llamacpp:kv_cache_usage_ratio",
            note="share of the KV cache's cells in use",
            absent_when="on current releases (older llama-server only)",
        ),
        "streamobs_engine_prompt_tokens_total": _s(
            "llamacpp:prompt_tokens_total", note="prompt tokens computed (cache reuse excluded)"
        ),
        "streamobs_engine_prompt_tokens_cached_total": _s("llamacpp:prompt_tokens_cached_total"),
        "streamobs_engine_generation_tokens_total": _s(
            "llamacpp:tokens_predicted_total",
            note="added when the slot is released (also after a client disconnect); "
            "llama.cpp prints values of a million and more with 6 significant digits",
        ),
    },
)

TGI = KindSpec(
    name="tgi",
    title="Hugging Face TGI",
    prefixes=("tgi_",),
    absent={
        "streamobs_engine_time_per_output_token_seconds": "tgi_request_mean_time_per_token"
        "_duration divides the inference time, prefill included, by every generated token",
        "streamobs_engine_inter_token_latency_seconds": "tgi_batch_inference_duration{method="
        '"decode"} is one batch step, not one request\'s gap',
        "streamobs_engine_request_success_total": "tgi_request_success has no reason "
        "(failures: tgi_request_failure{err})",
        "streamobs_engine_time_to_first_token_seconds": "TGI measures no time to first token",
    },
    sources={
        "streamobs_engine_requests_running": _s(
            "tgi_batch_current_size", note="requests in the current batch"
        ),
        "streamobs_engine_requests_waiting": _s("tgi_queue_size"),
        "streamobs_engine_prompt_tokens_total": _s(
            "tgi_request_input_length",
            note="the _sum of the per-request input length histogram",
            histogram_sum=True,
        ),
        "streamobs_engine_generation_tokens_total": _s(
            "tgi_request_generated_tokens",
            note="the _sum of the per-request generated tokens histogram",
            histogram_sum=True,
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s("tgi_request_duration"),
        "streamobs_engine_request_queue_time_seconds": _s(
            "tgi_request_queue_duration", note="queued until batched"
        ),
    },
)

LITELLM = KindSpec(
    name="litellm",
    title="LiteLLM proxy (a gateway: it measures its backends)",
    prefixes=("litellm_",),
    model_labels=("model",),
    absent={
        "streamobs_engine_requests_running": "litellm_in_flight_requests counts every HTTP "
        "request the worker serves, the scrape included, not an engine's batch",
        "streamobs_engine_request_success_total": "requests are counted by status_code, "
        "not by finish reason",
    },
    sources={
        "streamobs_engine_prompt_tokens_total": _s(
            "litellm_input_tokens_metric_total", note="from the backend's usage, on success"
        ),
        "streamobs_engine_prompt_tokens_cached_total": _s(
            "litellm_input_cached_tokens_metric_total", note="as the provider reports it"
        ),
        "streamobs_engine_generation_tokens_total": _s(
            "litellm_output_tokens_metric_total", note="from the backend's usage, on success"
        ),
        "streamobs_engine_time_to_first_token_seconds": _s(
            "litellm_llm_api_time_to_first_token_metric",
            note="streams only: the backend call's start to its first chunk (the proxy's "
            "own time before the call excluded)",
        ),
        "streamobs_engine_e2e_request_latency_seconds": _s(
            "litellm_request_total_latency_metric",
            note="request reached the proxy to the end of its processing",
        ),
        "streamobs_engine_request_queue_time_seconds": _s(
            "litellm_request_queue_time_seconds",
            note="the proxy's own queue (arrival to the backend call), not the engine's",
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
