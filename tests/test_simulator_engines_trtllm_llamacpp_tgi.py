"""The simulator's /metrics for trtllm-serve, llama-server and TGI: fed by request events, the
text has the families, types, label names and bucket edges of the engine's own exposition
(tests/data/<kind>/metrics.txt), in its format."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamobs.simulator.engines.base import EngineMetrics
from streamobs.simulator.engines.llamacpp import LlamacppMetrics, cpp_double
from streamobs.simulator.engines.tgi import TgiMetrics, rust_f64
from streamobs.simulator.engines.trtllm import TrtllmMetrics

DATA = Path(__file__).parent / "data"
MODEL = "tiny"

Shape = dict[str, tuple[str, frozenset[str]]]


def shape(text: str) -> Shape:
    """Family name → (type, label names of its samples)."""
    return {
        family.name: (family.type, frozenset(k for s in family.samples for k in s.labels))
        for family in text_string_to_metric_families(text)
    }


def edges(text: str, family: str) -> list[str]:
    return [
        s.labels["le"]
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
        if s.name.endswith("_bucket")
    ]


def serve(metrics: EngineMetrics) -> str:
    """A few requests: two alone, then two at once, one waiting, and one cut short."""
    metrics.add_model(MODEL)
    for rid, prompt, tokens, reason in (("a", 23, 32, "length"), ("b", 41, 32, "length")):
        metrics.admitted(MODEL, rid, prompt, 0.0008)
        metrics.first_token(MODEL, rid, prompt, 0.14)
        for i in range(tokens):
            metrics.token(MODEL, rid, None if i == 0 else 0.02)
        metrics.finished(MODEL, rid, reason, 0.14 + 0.02 * (tokens - 1))
    metrics.admitted(MODEL, "c", 17, 0.0006)
    metrics.first_token(MODEL, "c", 17, 0.12)
    metrics.token(MODEL, "c", None)
    metrics.waiting_started(MODEL)
    metrics.waiting_ended(MODEL)
    metrics.admitted(MODEL, "d", 56, 0.012)  # joins the running request
    metrics.first_token(MODEL, "d", 56, 0.25)
    metrics.token(MODEL, "d", None)
    for _ in range(19):
        metrics.token(MODEL, "c", 0.021)
        metrics.token(MODEL, "d", 0.022)
    metrics.finished(MODEL, "c", "stop", 0.53)
    metrics.finished(MODEL, "d", "stop", 0.68)
    metrics.admitted(MODEL, "e", 30, 0.0005)
    metrics.first_token(MODEL, "e", 30, 0.11)
    for i in range(10):
        metrics.token(MODEL, "e", None if i == 0 else 0.02)
    metrics.finished(MODEL, "e", None, 0.3)  # the client went away
    return metrics.render().decode()


@pytest.mark.parametrize(
    ("cls", "kind"),
    [(TrtllmMetrics, "trtllm"), (LlamacppMetrics, "llamacpp"), (TgiMetrics, "tgi")],
)
def test_families_types_and_labels_match_the_engine(cls: type[EngineMetrics], kind: str) -> None:
    fixture = (DATA / kind / "metrics.txt").read_text()
    text = serve(cls(kv_cache_tokens=4096))
    assert cls.kind == kind
    assert shape(text) == shape(fixture)


def test_tgi_buckets_help_and_exposition_format() -> None:
    fixture = (DATA / "tgi" / "metrics.txt").read_text()
    text = serve(TgiMetrics(kv_cache_tokens=4096))
    for family in (
        "tgi_request_duration",
        "tgi_batch_forward_duration",
        "tgi_request_input_length",
        "tgi_request_generated_tokens",
        "tgi_request_max_new_tokens",
        "tgi_batch_next_size",
    ):
        assert edges(text, family) == edges(fixture, family)
    assert "tgi_request_count 10\n" in text  # counted twice per OpenAI-route request
    assert "tgi_request_success 4\n" in text
    assert 'tgi_request_failure{err="dropped"} 1\n' in text
    assert 'tgi_request_duration_bucket{le="0.00015000000000000001"} 0\n' in text
    assert (
        '# TYPE tgi_request_skipped_tokens summary\ntgi_request_skipped_tokens{quantile="0"}'
        in text
    )
    helps = {line for line in fixture.splitlines() if line.startswith("# ")}
    assert helps == {line for line in text.splitlines() if line.startswith("# ")}
    assert "_total" not in text
    generated = next(
        f for f in text_string_to_metric_families(text) if f.name == "tgi_request_generated_tokens"
    )
    assert {s.name: s.value for s in generated.samples if not s.labels} == {
        "tgi_request_generated_tokens_sum": 32 + 32 + 20 + 20,
        "tgi_request_generated_tokens_count": 4,
    }


def test_tgi_mean_time_per_token_includes_prefill() -> None:
    metrics = TgiMetrics(kv_cache_tokens=4096)
    metrics.add_model(MODEL)
    metrics.admitted(MODEL, "a", 10, 0.5)
    metrics.first_token(MODEL, "a", 10, 0.9)  # 0.4 s of prefill
    for i in range(5):
        metrics.token(MODEL, "a", None if i == 0 else 0.1)
    metrics.finished(MODEL, "a", "length", 1.3)
    family = next(
        f
        for f in text_string_to_metric_families(metrics.render().decode())
        if f.name == "tgi_request_mean_time_per_token_duration"
    )
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert total == pytest.approx((1.3 - 0.5) / 5)


def test_llamacpp_values_and_text() -> None:
    fixture = (DATA / "llamacpp" / "metrics.txt").read_text()
    metrics = LlamacppMetrics(kv_cache_tokens=4096)
    text = serve(metrics)
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        line for line in fixture.splitlines() if line.startswith("#")
    ]
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["llamacpp:prompt_tokens_total"] == 23 + 41 + 17 + 56 + 30
    # Every token generated, the cut-short request's too (counted when its slot is released).
    assert values["llamacpp:tokens_predicted_total"] == 32 + 32 + 20 + 20 + 10
    # Decode time only: the gaps after each request's first token.
    gaps = 0.02 * 31 * 2 + 0.021 * 19 + 0.022 * 19 + 0.02 * 9
    assert values["llamacpp:tokens_predicted_seconds_total"] == pytest.approx(gaps, rel=1e-5)
    assert values["llamacpp:n_tokens_max_total"] == 56 + 20
    assert values["llamacpp:requests_processing"] == 0
    assert values["llamacpp:predicted_tokens_seconds"] > 0
    # A scrape closes the throughput window.
    again = {
        s.name: s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert again["llamacpp:predicted_tokens_seconds"] == 0
    assert again["llamacpp:tokens_predicted_total"] == values["llamacpp:tokens_predicted_total"]


def test_trtllm_served_at_its_path_with_pid_on_gauges() -> None:
    fixture = (DATA / "trtllm" / "metrics.txt").read_text()
    metrics = TrtllmMetrics(kv_cache_tokens=4096)
    assert metrics.metrics_path == "/prometheus/metrics"
    text = serve(metrics)
    for family in (
        "trtllm_time_to_first_token_seconds",
        "trtllm_time_per_output_token_seconds",
        "trtllm_e2e_request_latency_seconds",
        "trtllm_request_prefill_time_seconds",
    ):
        assert edges(text, family) == edges(fixture, family)
    assert "_created" not in text
    assert (
        'trtllm_request_success_total{engine_type="trtllm",finished_reason="length",'
        'model_name="tiny"} 2.0' in text
    )
    # The cut-short request is in no family: 4 finished, its tokens not counted.
    assert 'trtllm_generation_tokens_total{engine_type="trtllm",model_name="tiny"} 104.0' in text
    running = next(
        s
        for f in text_string_to_metric_families(text)
        if f.name == "trtllm_num_requests_running"
        for s in f.samples
    )
    assert set(running.labels) == {"engine_type", "model_name", "pid"}
    tpot = next(
        f
        for f in text_string_to_metric_families(text)
        if f.name == "trtllm_time_per_output_token_seconds"
    )
    count = next(s.value for s in tpot.samples if s.name.endswith("_count"))
    total = next(s.value for s in tpot.samples if s.name.endswith("_sum"))
    assert count == 4
    assert total == pytest.approx(0.02 + 0.02 + 0.021 + 0.022)


def test_number_formats() -> None:
    assert rust_f64(0.0001 * 1.5) == "0.00015000000000000001"
    assert rust_f64(3.0) == "3"
    assert rust_f64(1e-7) == "0.0000001"
    assert cpp_double(1234567.0) == "1.23457e+06"
    assert cpp_double(137.0) == "137"
    assert cpp_double(0.020512345) == "0.0205123"
