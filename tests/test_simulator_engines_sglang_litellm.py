"""The simulated SGLang and LiteLLM /metrics: fed by request events, they declare what the
real engines serve (tests/data/sglang/metrics.txt, tests/data/litellm/metrics.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streamobs.simulator.engines.base import EngineMetrics
from streamobs.simulator.engines.litellm import LitellmMetrics
from streamobs.simulator.engines.sglang import SglangMetrics

DATA = Path(__file__).parent / "data"


class Family:
    def __init__(self, kind: str, documentation: str, samples: list[Sample]) -> None:
        self.kind = kind
        self.documentation = documentation
        self.samples = samples

    @property
    def labels(self) -> set[str]:
        return {k for s in self.samples for k in s.labels} - {"le"}

    @property
    def edges(self) -> list[str]:
        return sorted(
            {s.labels["le"] for s in self.samples if s.name.endswith("_bucket")}, key=float
        )


def families(text: str) -> dict[str, Family]:
    return {
        f.name: Family(f.type, f.documentation, list(f.samples))
        for f in text_string_to_metric_families(text)
    }


def value(fams: dict[str, Family], family: str, sample: str) -> float:
    return sum(s.value for s in fams[family].samples if s.name == sample)


def serve(metrics: EngineMetrics, model: str = "tiny") -> None:
    """Two finished requests (16 and 7 tokens), one running, one waiting."""
    metrics.add_model(model)
    for rid, tokens, reason in (("a", 16, "length"), ("b", 7, "stop"), ("c", 3, None)):
        metrics.waiting_started(model)
        metrics.waiting_ended(model)
        metrics.admitted(model, rid, 24, 0.1)
        metrics.first_token(model, rid, 24, 0.25)
        metrics.token(model, rid, None)
        for _ in range(tokens - 1):
            metrics.token(model, rid, 0.02)
        if reason is not None:
            metrics.finished(model, rid, reason, 0.25 + 0.02 * (tokens - 1))
    metrics.waiting_started(model)


@pytest.mark.parametrize(
    ("cls", "fixture"),
    [(SglangMetrics, "sglang/metrics.txt"), (LitellmMetrics, "litellm/metrics.txt")],
)
def test_families_are_the_real_engines(cls: type[EngineMetrics], fixture: str) -> None:
    metrics = cls(kv_cache_tokens=4096)
    serve(metrics)
    rendered = families(metrics.render().decode())
    real = families((DATA / fixture).read_text())
    assert rendered
    for name, family in rendered.items():
        if name.endswith("_created"):
            continue
        assert name in real, name
        assert family.kind == real[name].kind, name
        assert family.documentation == real[name].documentation, name
        if real[name].samples:
            assert family.labels == real[name].labels, name
        if real[name].edges:
            assert family.edges == real[name].edges, name


def test_sglang_families_and_values() -> None:
    metrics = SglangMetrics(kv_cache_tokens=4096)
    serve(metrics)
    text = metrics.render().decode()
    fams = families(text)
    # Multiprocess mode, as SGLang serves it: no _created series, no empty family.
    assert "_created" not in text
    assert all(f.samples for f in fams.values())
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:time_to_first_token_seconds",
        "sglang:inter_token_latency_seconds",
        "sglang:request_time_per_output_token_seconds",
        "sglang:e2e_request_latency_seconds",
        "sglang:queue_time_seconds",
        "sglang:prompt_tokens",
        "sglang:generation_tokens",
        "sglang:num_requests",
    ):
        assert name in fams, name
    assert value(fams, "sglang:num_running_reqs", "sglang:num_running_reqs") == 1
    assert value(fams, "sglang:num_queue_reqs", "sglang:num_queue_reqs") == 1
    # One ITL sample per token after the first, running request included.
    itl = "sglang:inter_token_latency_seconds"
    assert value(fams, itl, itl + "_count") == 15 + 6 + 2
    assert value(fams, itl, itl + "_sum") == pytest.approx(0.02 * 23)
    # Token counters move when a request finishes, not at prefill.
    assert value(fams, "sglang:prompt_tokens", "sglang:prompt_tokens_total") == 48
    assert value(fams, "sglang:generation_tokens", "sglang:generation_tokens_total") == 23
    tpot = "sglang:request_time_per_output_token_seconds"
    assert value(fams, tpot, tpot + "_sum") == pytest.approx(0.04)
    ttft = "sglang:time_to_first_token_seconds"
    assert value(fams, ttft, ttft + "_count") == 3
    usage = 24 + 3
    assert value(fams, "sglang:kv_used_tokens", "sglang:kv_used_tokens") == usage
    assert value(fams, "sglang:token_usage", "sglang:token_usage") == round(usage / 4096, 2)
    assert value(fams, "sglang:full_token_usage", "sglang:full_token_usage") == usage / 4096
    labels = fams["sglang:num_running_reqs"].samples[0].labels
    assert labels == {
        "engine_type": "unified",
        "model_name": "tiny",
        "tp_rank": "0",
        "pp_rank": "0",
        "moe_ep_rank": "0",
    }


def test_sglang_counts_a_cut_request_as_aborted() -> None:
    metrics = SglangMetrics(kv_cache_tokens=4096)
    metrics.add_model("tiny")
    metrics.admitted("tiny", "x", 10, 0.0)
    metrics.first_token("tiny", "x", 10, 0.2)
    metrics.token("tiny", "x", None)
    metrics.token("tiny", "x", 0.02)
    metrics.finished("tiny", "x", None, 0.22)
    fams = families(metrics.render().decode())
    aborted = "sglang:num_aborted_requests"
    assert value(fams, aborted, aborted + "_total") == 1
    assert value(fams, "sglang:num_requests", "sglang:num_requests_total") == 1
    assert "sglang:request_time_per_output_token_seconds" not in fams


def test_litellm_families_and_values() -> None:
    metrics = LitellmMetrics(kv_cache_tokens=4096)
    serve(metrics)
    fams = families(metrics.render().decode())
    ttft = "litellm_llm_api_time_to_first_token_metric"
    assert value(fams, ttft, ttft + "_count") == 3
    assert value(fams, ttft, ttft + "_sum") == pytest.approx(0.75)
    latency = "litellm_request_total_latency_metric"
    assert value(fams, latency, latency + "_count") == 2
    assert value(fams, "litellm_input_tokens_metric", "litellm_input_tokens_metric_total") == 48
    output = "litellm_output_tokens_metric"
    assert value(fams, output, output + "_total") == 23
    proxy = "litellm_proxy_total_requests_metric"
    assert value(fams, proxy, proxy + "_total") == 2
    # Running and waiting requests, and the scrape itself.
    in_flight = "litellm_in_flight_requests"
    assert value(fams, in_flight, in_flight) == 3
    labels = fams[ttft].samples[0].labels
    assert labels["model"] == "tiny"
    assert labels["hashed_api_key"] == "litellm_proxy_master_key"
    assert "sk-" not in metrics.render().decode()
