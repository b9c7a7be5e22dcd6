"""Derived efficiency and cost on scripted counters: the arithmetic, a window without
tokens (absent, not zero), counter resets, gaps, and the exported series."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import streamobs.efficiency as efficiency_module
from streamobs.collectors.engines.names import NORMALISED
from streamobs.collectors.engines.scrape import snapshot_from_text
from streamobs.collectors.gpu import names as gpu_names
from streamobs.collectors.gpu.snapshot import GpuDevice, GpuSnapshot, GpuValue
from streamobs.efficiency import (
    CounterSample,
    Efficiency,
    EfficiencyCollector,
    EfficiencyTracker,
    counter_increase,
    counter_sample,
    efficiency_between,
)

# Two GPUs at $2.50 per GPU-hour cost $5 an hour, i.e. 1/720 of a dollar per second.
PRICE = 2.5
GPUS = 2


def sample(t: float, tokens: float | None, joules: float | None) -> CounterSample:
    return CounterSample(t, tokens, joules)


def render(collector: EfficiencyCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_counter_increase_follows_promql() -> None:
    assert counter_increase(100.0, 150.0) == 50.0
    assert counter_increase(150.0, 150.0) == 0.0
    assert counter_increase(3000.0, 500.0) == 500.0  # restarted from zero, then 500 more


def test_the_three_series_over_one_window() -> None:
    derived = efficiency_between(
        sample(0, 1_000, 50_000.0),
        sample(10, 3_000, 54_000.0),
        price_per_gpu_hour=PRICE,
        gpu_count=GPUS,
    )
    assert derived.window_seconds == 10
    assert derived.output_tokens_per_second == 200.0
    assert derived.joules_per_output_token == 2.0  # 4000 J over 2000 tokens
    # 10 s of two GPUs = 10/720 dollars, over 2000 tokens, per million tokens.
    assert derived.cost_per_million_output_tokens == pytest.approx(10 / 720 / 2000 * 1e6)


def test_no_tokens_in_the_window_means_absent_not_zero() -> None:
    derived = efficiency_between(
        sample(0, 3_000, 54_000.0),
        sample(10, 3_000, 55_000.0),
        price_per_gpu_hour=PRICE,
        gpu_count=GPUS,
    )
    assert derived.output_tokens_per_second == 0.0  # a true zero rate
    assert derived.joules_per_output_token is None
    assert derived.cost_per_million_output_tokens is None
    text = render(EfficiencyCollector(lambda: derived))
    assert "streamobs_efficiency_output_tokens_per_second 0.0" in text
    assert "\nstreamobs_efficiency_joules_per_output_token " not in text
    assert "\nstreamobs_efficiency_cost_per_million_output_tokens " not in text
    assert "# TYPE streamobs_efficiency_joules_per_output_token gauge" in text


def test_counter_resets() -> None:
    # vLLM restarted (3000 -> 400) and the driver reloaded (energy 54000 -> 1200).
    derived = efficiency_between(sample(0, 3_000, 54_000.0), sample(10, 400, 1_200.0))
    assert derived.output_tokens_per_second == 40.0
    assert derived.joules_per_output_token == 3.0


def test_energy_unknown_leaves_only_joules_per_token_out() -> None:
    derived = efficiency_between(
        sample(0, 0, None), sample(20, 1_000, None), price_per_gpu_hour=PRICE, gpu_count=1
    )
    assert derived.output_tokens_per_second == 50.0
    assert derived.joules_per_output_token is None
    assert derived.cost_per_million_output_tokens == pytest.approx(20 / 1440 / 1000 * 1e6)


def test_tokens_unknown_or_no_time_gives_nothing() -> None:
    nothing = efficiency_between(sample(0, None, 0.0), sample(10, 100, 10.0))
    assert nothing == Efficiency(10, None, None, None)
    same_time = efficiency_between(sample(5, 0, 0.0), sample(5, 100, 10.0))
    assert same_time.output_tokens_per_second is None


def test_tracker_with_consecutive_windows() -> None:
    tracker = EfficiencyTracker(window_seconds=0, price_per_gpu_hour=PRICE, gpu_count=GPUS)
    assert tracker.observe(sample(0, 0, 0.0)) is None
    assert tracker.latest() is None
    first = tracker.observe(sample(10, 2_000, 4_000.0))
    assert first is not None and first.joules_per_output_token == 2.0
    idle = tracker.observe(sample(20, 2_000, 4_500.0))
    assert idle is not None and idle.joules_per_output_token is None
    assert idle.output_tokens_per_second == 0.0
    busy = tracker.observe(sample(30, 3_000, 7_500.0))
    assert busy is not None and busy.joules_per_output_token == 3.0
    assert tracker.latest() == busy


def test_tracker_window_sums_increases_across_a_reset() -> None:
    tracker = EfficiencyTracker(window_seconds=30)
    script = [
        (0, 0, 0.0),
        (10, 1_000, 2_000.0),
        (20, 2_000, 4_000.0),
        (30, 300, 600.0),  # vLLM and the driver restarted: +300 tokens, +600 J
        (40, 1_300, 2_600.0),
        (50, 2_300, 5_600.0),
    ]
    derived = None
    for t, tokens, joules in script:
        derived = tracker.observe(sample(t, tokens, joules))
    assert derived is not None
    # The last 30 s: increases of 300, 1000 and 1000 tokens; 600, 2000 and 3000 J.
    assert derived.window_seconds == 30
    assert derived.output_tokens_per_second == pytest.approx(2_300 / 30)
    assert derived.joules_per_output_token == pytest.approx(5_600 / 2_300)


def test_tracker_window_with_no_tokens_anywhere_is_absent() -> None:
    tracker = EfficiencyTracker(window_seconds=20, price_per_gpu_hour=PRICE)
    for t, tokens, joules in [(0, 0, 0.0), (10, 500, 1_000.0), (20, 500, 1_500.0)]:
        derived = tracker.observe(sample(t, tokens, joules))
    assert derived is not None and derived.joules_per_output_token == 3.0  # 1500 J / 500
    for t in (30, 40):
        derived = tracker.observe(sample(t, 500, 1_500.0 + t))
    assert derived is not None
    assert derived.output_tokens_per_second == 0.0
    assert derived.joules_per_output_token is None
    assert derived.cost_per_million_output_tokens is None


def test_tracker_ignores_repeated_or_older_observations() -> None:
    tracker = EfficiencyTracker(window_seconds=0)
    tracker.observe(sample(0, 0, 0.0))
    derived = tracker.observe(sample(10, 100, 100.0))
    assert tracker.observe(sample(10, 100, 100.0)) == derived  # the same scrape again
    assert tracker.observe(sample(5, 999, 999.0)) == derived
    assert tracker.latest() == derived


def test_tracker_gap_makes_values_absent_until_it_leaves_the_window() -> None:
    tracker = EfficiencyTracker(window_seconds=20)
    tracker.observe(sample(0, 0, 0.0))
    tracker.observe(sample(10, 100, 200.0))
    gap = tracker.observe(sample(20, None, 400.0))  # vLLM could not be scraped
    assert gap is not None and gap.output_tokens_per_second is None
    tracker.observe(sample(30, 300, 600.0))
    tracker.observe(sample(40, 400, 800.0))
    derived = tracker.observe(sample(50, 500, 1_000.0))
    assert derived is not None and derived.output_tokens_per_second == 10.0
    assert derived.joules_per_output_token == 2.0


def test_tracker_validates_its_settings() -> None:
    with pytest.raises(ValueError):
        EfficiencyTracker(window_seconds=-1)
    with pytest.raises(ValueError):
        EfficiencyTracker(gpu_count=0)
    with pytest.raises(ValueError):
        EfficiencyTracker(price_per_gpu_hour=-0.5)


def test_counter_sample_from_the_collectors_snapshots() -> None:
    vllm = snapshot_from_text(
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0",model_name="m"} 1200.0\n'
        'vllm:generation_tokens_total{engine="1",model_name="m"} 34.0\n',
        scraped_at=1_795_635_800.0,
    )

    def gpu(index: int, joules: float | None) -> GpuDevice:
        values = () if joules is None else (GpuValue(gpu_names.ENERGY, joules),)
        return GpuDevice(index, f"GPU-{index}", "card", values)

    gpus = GpuSnapshot(True, None, 0.01, 1_795_635_795.0, (gpu(0, 500.0), gpu(1, 250.0)))
    assert counter_sample(vllm, gpus) == CounterSample(1_795_635_800.0, 1234.0, 750.0)
    assert counter_sample(vllm, gpus, model="other").generation_tokens_total is None
    assert counter_sample(vllm, gpus, gpus={1}).energy_joules_total == 250.0
    partial = GpuSnapshot(True, None, 0.01, 0.0, (gpu(0, 500.0), gpu(1, None)))
    assert counter_sample(vllm, partial).energy_joules_total is None
    assert counter_sample(vllm, None).energy_joules_total is None


def test_collector_exposes_present_values_and_never_raises() -> None:
    derived = Efficiency(60.0, 125.0, 0.5, 11.25)
    assert render(EfficiencyCollector(lambda: derived)).splitlines() == [
        "# HELP streamobs_efficiency_output_tokens_per_second "
        "Output (generation) tokens per second over the window.",
        "# TYPE streamobs_efficiency_output_tokens_per_second gauge",
        "streamobs_efficiency_output_tokens_per_second 125.0",
        "# HELP streamobs_efficiency_joules_per_output_token "
        "GPU energy per output token over the window, in joules; absent when no token was "
        "generated.",
        "# TYPE streamobs_efficiency_joules_per_output_token gauge",
        "streamobs_efficiency_joules_per_output_token 0.5",
        "# HELP streamobs_efficiency_cost_per_million_output_tokens "
        "GPU cost per million output tokens over the window, in the currency of the "
        "configured price per GPU-hour; absent when no token was generated.",
        "# TYPE streamobs_efficiency_cost_per_million_output_tokens gauge",
        "streamobs_efficiency_cost_per_million_output_tokens 11.25",
    ]

    def broken() -> Efficiency:
        raise RuntimeError("boom")

    for source in (broken, lambda: None, lambda: Efficiency(1.0, math.inf, math.nan, None)):
        families = EfficiencyCollector(source).collect()
        assert len(families) == 3 and all(not f.samples for f in families)


def test_documented_promql_names_the_exported_counters() -> None:
    doc = efficiency_module.__doc__ or ""
    assert f"rate({gpu_names.ENERGY}[5m])" in doc
    assert "rate(streamobs_engine_generation_tokens_total[5m])" in doc
    assert "streamobs_engine_generation_tokens_total" in {spec.name for spec in NORMALISED}
    assert f"count({gpu_names.MEMORY_TOTAL})" in doc
