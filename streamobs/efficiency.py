"""Derived efficiency and cost: output tokens per second, joules per output token, and
cost per million output tokens, from raw counters observed over the same window.

Inputs are cumulative counters: vLLM's generation-token counter and NVML's energy counter
(both summed over their series). A window's increase is taken as Prometheus' ``rate()``
takes it: a counter that went down restarted from zero, so its increase is its new value.
Joules per token and cost per token are absent, not zero, for a window in which no token
was generated (there is no cost per token without tokens). Cost assumes the configured
GPUs are paid for by the hour whether busy or idle.

The same series from the raw counters in PromQL (the ``> 0`` filter makes a window without
tokens yield nothing, as here; PRICE is the price per GPU-hour, GPUS the number of GPUs):

    streamobs_efficiency_output_tokens_per_second
      = sum(rate(streamobs_engine_generation_tokens_total[5m]))
    streamobs_efficiency_joules_per_output_token
      = sum(rate(streamobs_gpu_energy_joules_total[5m]))
        / (sum(rate(streamobs_engine_generation_tokens_total[5m])) > 0)
    streamobs_efficiency_cost_per_million_output_tokens
      = PRICE * GPUS / 3600 * 1e6
        / (sum(rate(streamobs_engine_generation_tokens_total[5m])) > 0)

(GPUS may be ``count(streamobs_gpu_memory_total_bytes)``.) ``rate()`` extrapolates to the
window's edges; a ratio of two rates over the same window cancels that out.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from streamobs.collectors.engines.scrape import EngineSnapshot, server_view
from streamobs.collectors.gpu.snapshot import GpuSnapshot

_log = logging.getLogger(__name__)

OUTPUT_TOKENS_PER_SECOND = "streamobs_efficiency_output_tokens_per_second"
JOULES_PER_OUTPUT_TOKEN = "streamobs_efficiency_joules_per_output_token"
COST_PER_MILLION_OUTPUT_TOKENS = "streamobs_efficiency_cost_per_million_output_tokens"

DOCUMENTATION = {
    OUTPUT_TOKENS_PER_SECOND: "Output (generation) tokens per second over the window.",
    JOULES_PER_OUTPUT_TOKEN: "GPU energy per output token over the window, in joules; "
    "absent when no token was generated.",
    COST_PER_MILLION_OUTPUT_TOKENS: "GPU cost per million output tokens over the window, "
    "in the currency of the configured price per GPU-hour; absent when no token was "
    "generated.",
}


@dataclass(frozen=True, slots=True)
class CounterSample:
    """Cumulative counters read at ``timestamp`` (seconds, any clock used consistently).
    None means the counter could not be read (vLLM down, no energy counter)."""

    timestamp: float
    generation_tokens_total: float | None
    energy_joules_total: float | None


@dataclass(frozen=True, slots=True)
class Increase:
    """How much the counters grew over ``seconds``; None when unknown for the window."""

    seconds: float
    tokens: float | None
    joules: float | None


@dataclass(frozen=True, slots=True)
class Efficiency:
    """The derived values of one window; None means absent."""

    window_seconds: float
    output_tokens_per_second: float | None
    joules_per_output_token: float | None
    cost_per_million_output_tokens: float | None


def counter_increase(earlier: float, later: float) -> float:
    """A counter's increase, as PromQL reckons it: a drop means it restarted from zero."""
    return later - earlier if later >= earlier else later


def increase_between(earlier: CounterSample, later: CounterSample) -> Increase:
    return Increase(
        seconds=later.timestamp - earlier.timestamp,
        tokens=_increase(earlier.generation_tokens_total, later.generation_tokens_total),
        joules=_increase(earlier.energy_joules_total, later.energy_joules_total),
    )


def combine(increases: Iterable[Increase]) -> Increase:
    """Consecutive increases as one window; a quantity unknown in any part is unknown."""
    parts = list(increases)
    tokens = [p.tokens for p in parts]
    joules = [p.joules for p in parts]
    return Increase(
        seconds=math.fsum(p.seconds for p in parts),
        tokens=None if None in tokens else math.fsum(t for t in tokens if t is not None),
        joules=None if None in joules else math.fsum(j for j in joules if j is not None),
    )


def derive(
    increase: Increase, *, price_per_gpu_hour: float | None = None, gpu_count: int = 1
) -> Efficiency:
    """The derived values of one window."""
    seconds, tokens = increase.seconds, increase.tokens
    if not seconds > 0 or tokens is None:
        return Efficiency(max(seconds, 0.0), None, None, None)
    per_token = tokens > 0  # per-token figures need tokens: absent, never zero or infinite
    joules = increase.joules / tokens if per_token and increase.joules is not None else None
    cost = None
    if per_token and price_per_gpu_hour is not None:
        cost = price_per_gpu_hour * gpu_count * (seconds / 3600) / tokens * 1e6
    return Efficiency(seconds, tokens / seconds, joules, cost)


def efficiency_between(
    earlier: CounterSample,
    later: CounterSample,
    *,
    price_per_gpu_hour: float | None = None,
    gpu_count: int = 1,
) -> Efficiency:
    """The derived values between two observations of the counters."""
    increase = increase_between(earlier, later)
    return derive(increase, price_per_gpu_hour=price_per_gpu_hour, gpu_count=gpu_count)


def counter_sample(
    vllm: EngineSnapshot,
    gpu: GpuSnapshot | None,
    *,
    model: str | None = None,
    gpus: Collection[int] | None = None,
) -> CounterSample:
    """The counters of one vLLM scrape, stamped with its time, and the GPUs' energy as last
    sampled. The energy reading may be up to one GPU sampling interval older than the
    tokens; over a window several intervals long that offset largely cancels out."""
    tokens = server_view(vllm, model).generation_tokens_total if vllm.up else None
    energy = gpu.energy_joules_total(gpus) if gpu is not None else None
    return CounterSample(vllm.scraped_at, tokens, energy)


class EfficiencyTracker:
    """Keeps the increases of the last ``window_seconds`` (at least one observation apart)
    and derives the series over them. Thread-safe: observe from one thread, read the
    latest from the scrape."""

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        price_per_gpu_hour: float | None = None,
        gpu_count: int = 1,
    ) -> None:
        if window_seconds < 0 or gpu_count < 1:
            raise ValueError("window_seconds must be >= 0 and gpu_count >= 1")
        if price_per_gpu_hour is not None and not price_per_gpu_hour >= 0:
            raise ValueError("price_per_gpu_hour must be >= 0")
        self._window = window_seconds
        self._price = price_per_gpu_hour
        self._gpu_count = gpu_count
        self._lock = threading.Lock()
        self._previous: CounterSample | None = None
        self._increases: deque[Increase] = deque()
        self._latest: Efficiency | None = None

    def observe(self, sample: CounterSample) -> Efficiency | None:
        """Add an observation; returns the latest derived values (None before two)."""
        with self._lock:
            previous = self._previous
            if previous is not None and sample.timestamp <= previous.timestamp:
                return self._latest  # the same scrape again, or out of order
            self._previous = sample
            if previous is None:
                return None
            self._increases.append(increase_between(previous, sample))
            # Drop the oldest increase while the rest still cover the window.
            while len(self._increases) > 1 and (
                math.fsum(i.seconds for i in self._increases) - self._increases[0].seconds
                >= self._window
            ):
                self._increases.popleft()
            self._latest = derive(
                combine(self._increases),
                price_per_gpu_hour=self._price,
                gpu_count=self._gpu_count,
            )
            return self._latest

    def latest(self) -> Efficiency | None:
        with self._lock:
            return self._latest


class EfficiencyCollector:
    """A prometheus_client custom collector over the latest derived values: a series is
    present only when its value is. ``collect()`` never raises."""

    def __init__(self, latest: Callable[[], Efficiency | None]) -> None:
        self._latest = latest
        self._failing = False  # log a failure when it starts, not on every scrape

    def describe(self) -> list[Metric]:
        return [Metric(name, text, "gauge") for name, text in DOCUMENTATION.items()]

    def collect(self) -> list[Metric]:
        families = self.describe()
        try:
            latest = self._latest()
        except Exception:
            # Derived series are best effort: absent rather than a failed scrape.
            if not self._failing:
                _log.exception("cannot read the derived efficiency values")
            self._failing = True
            return families
        self._failing = False
        if not isinstance(latest, Efficiency):
            return families
        values = {
            OUTPUT_TOKENS_PER_SECOND: latest.output_tokens_per_second,
            JOULES_PER_OUTPUT_TOKEN: latest.joules_per_output_token,
            COST_PER_MILLION_OUTPUT_TOKENS: latest.cost_per_million_output_tokens,
        }
        for family in families:
            value = values[family.name]
            if value is not None and math.isfinite(value):
                family.samples.append(Sample(family.name, {}, float(value)))
        return families


def _increase(earlier: float | None, later: float | None) -> float | None:
    if earlier is None or later is None:
        return None
    return counter_increase(earlier, later)
