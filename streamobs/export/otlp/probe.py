"""Probe results as OTLP metrics: the same results and values as ``export.prometheus``.

As on the Prometheus side, latency histograms observe successful probes only, except
``gen_ai.client.operation.duration``, which the convention also records for failed
operations, with ``error.type`` set to the outcome class. TTFT is the first chunk carrying
generated content (vLLM's first chunk is role-only and says nothing about prefill), and
``time_per_output_chunk`` takes every gap between content chunks, as the convention defines
it; TPOT (per token, from the usage count) has no convention and is ``streamobs.*``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from opentelemetry.metrics import Counter, Histogram, Meter

from streamobs.export.otlp import names as n
from streamobs.export.otlp.health import AttributeKey, AttributeValue, SeriesGuard, attribute_key
from streamobs.export.otlp.snapshots import (
    ObservedSeries,
    SeriesSource,
    SeriesSpec,
    SeriesValue,
)
from streamobs.export.prometheus.model_labels import model_label
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.targets import SLO, TargetConfig

Attributes = dict[str, AttributeValue]
FAILURE_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.OK)

_LAST_PROBE = (
    SeriesSpec(n.PROBE_SUCCESS, "gauge", n.RATIO, "1 if the last probe succeeded."),
    SeriesSpec(
        n.PROBE_BURST_SHARE,
        "gauge",
        n.RATIO,
        "Share of the last probe's tokens that arrived in bursts.",
    ),
    SeriesSpec(
        n.PROBE_LAST_RUN, "gauge", n.SECONDS, "Wall-clock start of the last probe (Unix time)."
    ),
)
_SLO = (
    SeriesSpec(n.SLO_TTFT, "gauge", n.SECONDS, "Configured TTFT SLO threshold."),
    SeriesSpec(n.SLO_TPOT, "gauge", n.SECONDS, "Configured TPOT SLO threshold."),
    SeriesSpec(
        n.SLO_OBJECTIVE, "gauge", n.RATIO, "Configured SLO objective (share of good probes)."
    ),
)


def operation_name(target: TargetConfig) -> str:
    return n.OPERATIONS.get(target.target.endpoint, target.target.endpoint)


class ProbeInstruments:
    """The probe instruments on ``meter``; ``record()`` is called once per finished probe."""

    def __init__(
        self,
        meter: Meter,
        observed: ObservedSeries,
        guard: SeriesGuard,
        provider: str,
        targets: Sequence[TargetConfig],
    ) -> None:
        self._guard = guard
        self._provider = provider
        self._lock = threading.Lock()
        self._last: dict[AttributeKey, tuple[Attributes, float, float, float]] = {}
        self._prepared: set[tuple[str, str]] = set()
        self.duration = meter.create_histogram(
            n.OPERATION_DURATION,
            n.SECONDS,
            "GenAI operation duration: request start to end of stream ([DONE]) of successful "
            "probes; to the failure, with error.type, of failed ones.",
        )
        self.ttft = meter.create_histogram(
            n.TIME_TO_FIRST_CHUNK,
            n.SECONDS,
            "Time to the first chunk with generated content (TTFT) of successful probes.",
        )
        self.itl = meter.create_histogram(
            n.TIME_PER_OUTPUT_CHUNK,
            n.SECONDS,
            "Gaps between consecutive content chunks (inter-token latency) of successful probes.",
        )
        self.tokens = meter.create_histogram(
            n.TOKEN_USAGE, n.TOKENS, "Input and output tokens of successful probes."
        )
        self.tpot = meter.create_histogram(
            n.PROBE_TPOT,
            n.SECONDS,
            "Time per output token after the first, (last - first) / (tokens - 1), "
            "of successful probes.",
        )
        self.headers = meter.create_histogram(
            n.PROBE_HEADERS,
            n.SECONDS,
            "Request start to response headers (time to first byte), every probe that got them.",
        )
        self.attempts = meter.create_counter(n.PROBE_ATTEMPTS, n.PROBES, "Probes run.")
        self.failures = meter.create_counter(
            n.PROBE_FAILURES, n.PROBES, "Failed probes by outcome class (error.type)."
        )
        self.buffered = meter.create_counter(
            n.PROBE_BUFFERED,
            n.PROBES,
            "Probes whose tokens arrived in bursts (a buffering proxy or compression).",
        )
        self.degraded = meter.create_counter(
            n.PROBE_DEGRADED,
            n.PROBES,
            "Probes whose own stamps could be off by more than the timing tolerance, by "
            "reason; kept out of the latency histograms.",
        )
        observed.add(_LAST_PROBE, self._last_probe_values)
        observed.add(_SLO, _slo_source(targets))
        for target in targets:
            for model in target.models:  # a discovered model's appear with its first probe
                self.prepare(target, model_label(model.name))

    def attributes(self, target: TargetConfig, model: str) -> Attributes:
        return {
            n.TARGET: target.name,
            n.OPERATION_NAME: operation_name(target),
            n.PROVIDER_NAME: self._provider,
            n.REQUEST_MODEL: model,
            n.SERVER_ADDRESS: target.target.host,
            n.SERVER_PORT: target.target.port,
        }

    def prepare(self, target: TargetConfig, model: str) -> None:
        """Create the counters' series, so a target that always fails has them all."""
        with self._lock:
            if (target.name, model) in self._prepared:
                return
        base = self.attributes(target, model)
        if not self._guard.admit(n.PROBE_ATTEMPTS, base):
            return  # over the cap: nothing to prepare, and nothing remembered
        with self._lock:
            self._prepared.add((target.name, model))
        self._add(self.attempts, n.PROBE_ATTEMPTS, 0, base)
        self._add(self.buffered, n.PROBE_BUFFERED, 0, base)
        for outcome in FAILURE_OUTCOMES:
            self._add(self.failures, n.PROBE_FAILURES, 0, {**base, n.ERROR_TYPE: outcome})
        self._set_last(base, 0.0, 0.0, 0.0)

    def record(self, target: TargetConfig, result: ProbeResult) -> None:
        self.prepare(target, result.model)
        base = self.attributes(target, result.model)
        genai = dict(base)
        if result.response_model:
            genai[n.RESPONSE_MODEL] = result.response_model
        self._add(self.attempts, n.PROBE_ATTEMPTS, 1, base)
        delivery = result.delivery
        # No stream, no bursts: a failed connect must not keep the previous probe's share.
        burst_share = delivery.burst_share if delivery else 0.0
        self._set_last(base, 1.0 if result.ok else 0.0, burst_share, result.started_at)
        if result.headers_ns is not None and result.exact:
            self._record(self.headers, n.PROBE_HEADERS, [result.headers_ns / 1e9], base)
        if delivery is not None and delivery.buffered:
            self._add(self.buffered, n.PROBE_BUFFERED, 1, base)
        degraded = result.timing.degraded
        if degraded is not None:
            reason = {n.DEGRADED_REASON: degraded.value}
            self._add(self.degraded, n.PROBE_DEGRADED, 1, {**base, **reason})
        if not result.ok:
            error = {n.ERROR_TYPE: result.outcome.value}
            self._add(self.failures, n.PROBE_FAILURES, 1, {**base, **error})
            self._record(
                self.duration, n.OPERATION_DURATION, [result.end_ns / 1e9], {**genai, **error}
            )
            return
        if degraded is not None:  # counted above; its latencies cannot be vouched for
            self._add_tokens(result, genai)
            return
        if result.first_token_ns is not None:
            self._record(self.ttft, n.TIME_TO_FIRST_CHUNK, [result.first_token_ns / 1e9], genai)
        if result.tpot_ns is not None:
            self._record(self.tpot, n.PROBE_TPOT, [result.tpot_ns / 1e9], base)
        if result.done_ns is not None:
            self._record(self.duration, n.OPERATION_DURATION, [result.done_ns / 1e9], genai)
        self._record(self.itl, n.TIME_PER_OUTPUT_CHUNK, [g / 1e9 for g in result.itl_ns], genai)
        self._add_tokens(result, genai)

    def _add_tokens(self, result: ProbeResult, genai: Attributes) -> None:
        for token_type, count in (
            ("input", result.prompt_tokens),
            ("output", result.output_tokens),
        ):
            if count is not None:
                self._record(
                    self.tokens, n.TOKEN_USAGE, [count], {**genai, n.TOKEN_TYPE: token_type}
                )

    def _add(self, counter: Counter, name: str, amount: int, attributes: Attributes) -> None:
        if self._guard.admit(name, attributes):
            counter.add(amount, attributes)

    def _record(
        self, histogram: Histogram, name: str, values: Sequence[float], attributes: Attributes
    ) -> None:
        if values and self._guard.admit(name, attributes):
            for value in values:
                histogram.record(value, attributes)

    def _set_last(self, base: Attributes, success: float, burst: float, started: float) -> None:
        if not self._guard.admit(n.PROBE_SUCCESS, base):
            return
        with self._lock:
            self._last[attribute_key(base)] = (base, success, burst, started)

    def _last_probe_values(self) -> Iterator[SeriesValue]:
        with self._lock:
            last = list(self._last.values())
        for attributes, success, burst, started in last:
            yield SeriesValue(n.PROBE_SUCCESS, attributes, success)
            yield SeriesValue(n.PROBE_BURST_SHARE, attributes, burst)
            yield SeriesValue(n.PROBE_LAST_RUN, attributes, started)


def _slo_source(targets: Sequence[TargetConfig]) -> SeriesSource:
    """Per target, and per target and model for a model with an SLO of its own."""
    owners: list[tuple[dict[str, str], SLO]] = []
    for t in targets:
        owners.append(({n.TARGET: t.name}, t.slo))
        owners += [
            ({n.TARGET: t.name, n.REQUEST_MODEL: model_label(model)}, slo)
            for model, slo in t.model_slos()
        ]
    values = [
        SeriesValue(name, attributes, value)
        for attributes, slo in owners
        for name, value in (
            (n.SLO_TTFT, slo.ttft_seconds),
            (n.SLO_TPOT, slo.tpot_seconds),
            (n.SLO_OBJECTIVE, slo.objective),
        )
    ]
    return lambda: values
