"""The engines' normalised series (``collectors/engines/names.py``) over OTLP, from the
poller's latest snapshots: ``streamobs_engine_requests_running`` becomes
``streamobs.engine.requests_running``, counters lose ``_total``, ``_seconds``/``_ratio``
become the unit, and the engine kind is the ``streamobs.engine.kind`` attribute. The
engines' own raw families are re-exposed on ``/metrics`` only."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from streamobs.collectors.engines.names import NORMALISED, NormalisedSpec
from streamobs.collectors.engines.scrape import EngineSnapshot
from streamobs.export.otlp.health import AttributeValue
from streamobs.export.otlp.names import RATIO, REQUEST_MODEL, SECONDS, TARGET, TOKENS
from streamobs.export.otlp.snapshots import (
    COLLECTOR_HEALTH,
    HistogramSource,
    HistogramValue,
    SeriesSource,
    SeriesSpec,
    SeriesValue,
)

SnapshotSource = Callable[[], Mapping[str, EngineSnapshot]]

COLLECTOR_UP, COLLECTOR_DURATION = (spec.name for spec in COLLECTOR_HEALTH)
_COLLECTOR = "streamobs.collector"
_KIND = "streamobs.engine.kind"
_PREFIX = "streamobs_engine_"
_UNITS = {
    "streamobs_engine_requests_running": "{request}",
    "streamobs_engine_requests_waiting": "{request}",
    "streamobs_engine_prompt_tokens_total": TOKENS,
    "streamobs_engine_prompt_tokens_cached_total": TOKENS,
    "streamobs_engine_generation_tokens_total": TOKENS,
    "streamobs_engine_preemptions_total": "{preemption}",
    "streamobs_engine_prefix_cache_queries_total": TOKENS,
    "streamobs_engine_prefix_cache_hits_total": TOKENS,
    "streamobs_engine_request_success_total": "{request}",
}


def otel_name(spec: NormalisedSpec) -> str:
    rest = spec.name.removeprefix(_PREFIX).removesuffix("_total")
    return "streamobs.engine." + rest.removesuffix("_seconds").removesuffix("_ratio")


def otel_unit(spec: NormalisedSpec) -> str:
    if spec.name.endswith("_seconds"):
        return SECONDS
    if spec.name.endswith("_ratio"):
        return RATIO
    return _UNITS.get(spec.name, "1")


def _label_attribute(label: str) -> str:
    if label == "model":
        return REQUEST_MODEL
    return "streamobs.engine.index" if label == "engine_index" else f"streamobs.engine.{label}"


VLLM_SERIES: tuple[SeriesSpec, ...] = (
    *(
        SeriesSpec(otel_name(spec), spec.kind, otel_unit(spec), spec.documentation)
        for spec in NORMALISED
        if spec.kind != "histogram"
    ),
    *COLLECTOR_HEALTH,
)


def vllm_series(
    latest: SnapshotSource, targets: Sequence[str] | Mapping[str, str | None]
) -> SeriesSource:
    """Scalars and collector health of every engine (``targets``: the configured ones, with
    their configured kind where known); engines not scraped yet report down, as on
    ``/metrics``."""
    kinds = targets if isinstance(targets, Mapping) else dict.fromkeys(targets)

    def read() -> Iterator[SeriesValue]:
        snapshots = latest()
        for target in [*kinds, *(t for t in snapshots if t not in kinds)]:
            snapshot = snapshots.get(target)
            kind = kinds.get(target) or (snapshot.kind if snapshot is not None else None)
            # As on /metrics: the kind's collector, "engine" while the kind is unknown.
            health: dict[str, AttributeValue] = {_COLLECTOR: kind or "engine", TARGET: target}
            up = snapshot is not None and snapshot.up
            yield SeriesValue(COLLECTOR_UP, health, 1.0 if up else 0.0)
            duration = snapshot.duration_seconds if snapshot is not None else 0.0
            yield SeriesValue(COLLECTOR_DURATION, health, duration)
            if snapshot is None or not snapshot.up:
                continue
            for family in snapshot.normalised:
                name = otel_name(family.spec)
                for scalar in family.scalars:
                    attributes = _attributes(
                        target, snapshot.kind, family.label_names, scalar.labels
                    )
                    yield SeriesValue(name, attributes, scalar.value)

    return read


def vllm_histograms(latest: SnapshotSource) -> HistogramSource:
    def read() -> Iterator[HistogramValue]:
        for target, snapshot in latest().items():
            if not snapshot.up:
                continue
            for family in snapshot.normalised:
                for histogram in family.histograms:
                    bounds = tuple(b for b, _ in histogram.buckets if not math.isinf(b))
                    yield HistogramValue(
                        name=otel_name(family.spec),
                        unit=otel_unit(family.spec),
                        description=family.spec.documentation,
                        attributes=_attributes(
                            target, snapshot.kind, family.label_names, histogram.labels
                        ),
                        bounds=bounds,
                        cumulative=tuple(count for _, count in histogram.buckets),
                        sum=histogram.sum,
                    )

    return read


def _attributes(
    target: str, kind: str | None, names: Sequence[str], values: Sequence[str]
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {TARGET: target, _KIND: kind or ""}
    for name, value in zip(names, values, strict=True):
        attributes[_label_attribute(name)] = value
    return attributes
