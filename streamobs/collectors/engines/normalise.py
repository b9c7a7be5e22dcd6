"""An engine's own families into streamobs' normalised series, by its kind's table
(``kinds.py``; the families are in ``names.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from prometheus_client.samples import Sample

from streamobs.collectors.engines.kinds import KindSpec, Source
from streamobs.collectors.engines.names import (
    DEFAULT_ENGINE,
    NORMALISED,
    SERIES_LABELS,
    NormalisedSpec,
)
from streamobs.collectors.engines.parse import ParsedFamily
from streamobs.labels import OVERFLOW, model_label

# Distinct model names one engine's normalised series carry; the rest are "(other)".
MAX_MODELS_PER_ENGINE = 64

# Label values in the order of ``SERIES_LABELS`` followed by the spec's extra labels.
LabelValues = tuple[str, ...]

# Untyped is accepted for scalars: the samples are the same when a proxy drops TYPE lines.
_SCALAR_TYPES = {"gauge": ("gauge", "unknown"), "counter": ("counter", "unknown")}


@dataclass(frozen=True, slots=True)
class ScalarSeries:
    labels: LabelValues
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSeries:
    """Cumulative buckets as (upper bound, count), ending with +Inf, as engines expose them."""

    labels: LabelValues
    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def bounds(self) -> tuple[float, ...]:
        return tuple(bound for bound, _ in self.buckets)


@dataclass(frozen=True, slots=True)
class NormalisedFamily:
    spec: NormalisedSpec
    source: str  # the engine's own family the values came from
    scalars: tuple[ScalarSeries, ...] = ()
    histograms: tuple[HistogramSeries, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        return (*SERIES_LABELS, *self.spec.extra_labels)


def normalise(families: Iterable[ParsedFamily], kind: KindSpec) -> tuple[NormalisedFamily, ...]:
    """Every family that one of ``kind``'s sources feeds; the others are absent. Model
    names are bounded label values, and past ``MAX_MODELS_PER_ENGINE`` distinct ones the
    rest are merged under ``model="(other)"`` (totals stay right, series stay bounded)."""
    by_name = _by_exposed_name(families)
    found = [_normalise_spec(spec, kind, by_name) for spec in NORMALISED]
    return _bounded_models([f for f in found if f is not None])


def _bounded_models(families: list[NormalisedFamily]) -> tuple[NormalisedFamily, ...]:
    seen: dict[str, str] = {}  # engine's model name -> its label
    for family in families:
        models = [s.labels[0] for s in family.scalars] + [h.labels[0] for h in family.histograms]
        for model in models:
            if model not in seen:
                bounded = model_label(model) if model else ""
                seen[model] = bounded if len(seen) < MAX_MODELS_PER_ENGINE else OVERFLOW
    if all(model == label for model, label in seen.items()):
        return tuple(families)
    return tuple(_relabelled(family, seen) for family in families)


def _relabelled(family: NormalisedFamily, labels: Mapping[str, str]) -> NormalisedFamily:
    def key(values: LabelValues) -> LabelValues:
        return (labels[values[0]], *values[1:])

    scalars: dict[LabelValues, float] = {}
    for scalar in family.scalars:
        k = key(scalar.labels)
        merged = scalars.get(k)
        if merged is None:
            scalars[k] = scalar.value
        elif family.spec.merge == "max":
            scalars[k] = max(merged, scalar.value)
        else:
            scalars[k] = merged + scalar.value
    histograms: dict[LabelValues, HistogramSeries] = {}
    for histogram in family.histograms:
        k = key(histogram.labels)
        kept = histograms.get(k)
        if kept is None or kept.bounds() != histogram.bounds():
            # Buckets that do not line up are not added: the first one is kept.
            histograms.setdefault(k, replace(histogram, labels=k))
            continue
        histograms[k] = HistogramSeries(
            k,
            tuple(
                (b, c + o) for (b, c), (_, o) in zip(kept.buckets, histogram.buckets, strict=True)
            ),
            kept.count + histogram.count,
            kept.sum + histogram.sum,
        )
    return NormalisedFamily(
        family.spec,
        family.source,
        tuple(ScalarSeries(k, v) for k, v in scalars.items()),
        tuple(histograms.values()),
    )


def _by_exposed_name(families: Iterable[ParsedFamily]) -> dict[str, ParsedFamily]:
    """Families by the name on their ``# TYPE`` line; a name announced twice (which engines
    do not do) is read as one family, or ignored the second time if its type differs."""
    by_name: dict[str, ParsedFamily] = {}
    for family in families:
        seen = by_name.get(family.exposed_name)
        if seen is None:
            by_name[family.exposed_name] = family
        elif seen.type == family.type:
            samples = seen.samples + family.samples
            by_name[family.exposed_name] = ParsedFamily(
                seen.name, seen.type, seen.documentation, samples
            )
    return by_name


def _normalise_spec(
    spec: NormalisedSpec, kind: KindSpec, by_name: Mapping[str, ParsedFamily]
) -> NormalisedFamily | None:
    sources = kind.sources.get(spec.name)
    if sources is None:
        return None
    labels = _Labels(spec, kind, sources)
    for source in sources.names:
        family = by_name.get(source)
        if family is None:
            continue
        if spec.kind == "histogram":
            histograms = _histograms(labels, source, family)
            if histograms:
                return NormalisedFamily(spec, source, histograms=histograms)
        else:
            scalars = _scalars(spec, labels, source, family, sources.histogram_sum)
            if scalars:
                return NormalisedFamily(spec, source, scalars=scalars)
    return None


class _Labels:
    """Reads one kind's labels into the normalised label values of one family."""

    def __init__(self, spec: NormalisedSpec, kind: KindSpec, sources: Source) -> None:
        self.keeps = sources.keeps
        self._model = kind.model_labels
        self._index = kind.index_label
        self._extra = tuple(kind.label_sources.get(name, name) for name in spec.extra_labels)

    def values(self, labels: Mapping[str, str]) -> LabelValues:
        model = next((labels[name] for name in self._model if name in labels), "")
        index = labels.get(self._index, DEFAULT_ENGINE) if self._index else DEFAULT_ENGINE
        return (model, index, *(labels.get(name, "") for name in self._extra))


def _scalars(
    spec: NormalisedSpec,
    labels: _Labels,
    source: str,
    family: ParsedFamily,
    histogram_sum: bool = False,
) -> tuple[ScalarSeries, ...]:
    """Scalar series; ``histogram_sum``: a counter read from a histogram's ``_sum``."""
    if histogram_sum:
        if family.type != "histogram":
            return ()
        name = source + "_sum"
    elif family.type not in _SCALAR_TYPES.get(spec.kind, ()):
        return ()
    else:
        name = source
    values: dict[LabelValues, float] = {}
    for sample in family.samples:
        if sample.name != name or not labels.keeps(sample.labels):
            continue  # e.g. the counter's _created sample
        key = labels.values(sample.labels)
        value = float(sample.value)
        if key in values:
            value = max(values[key], value) if spec.merge == "max" else values[key] + value
        values[key] = value
    return tuple(ScalarSeries(labels, value) for labels, value in values.items())


@dataclass
class _HistogramParts:
    buckets: dict[float, float]
    count: float | None = None
    sum: float | None = None


def _histograms(labels: _Labels, source: str, family: ParsedFamily) -> tuple[HistogramSeries, ...]:
    if family.type != "histogram":
        return ()
    parts: dict[LabelValues, dict[tuple[tuple[str, str], ...], _HistogramParts]] = {}
    for sample in family.samples:
        _add_histogram_sample(labels, source, sample, parts)
    merged = (_merge_histograms(key, list(series.values())) for key, series in parts.items())
    return tuple(h for h in merged if h is not None)


def _add_histogram_sample(
    labels_of: _Labels,
    source: str,
    sample: Sample,
    parts: dict[LabelValues, dict[tuple[tuple[str, str], ...], _HistogramParts]],
) -> None:
    suffix = sample.name[len(source) :] if sample.name.startswith(source) else ""
    if suffix not in ("_bucket", "_count", "_sum"):
        return
    if not labels_of.keeps(sample.labels):
        return
    labels = {k: v for k, v in sample.labels.items() if k != "le"}
    # The engine's own label set identifies one histogram; several may map to one key.
    series = parts.setdefault(labels_of.values(labels), {}).setdefault(
        tuple(sorted(labels.items())), _HistogramParts({})
    )
    value = float(sample.value)
    if suffix == "_count":
        series.count = value
    elif suffix == "_sum":
        series.sum = value
    else:
        bound = _bucket_bound(sample.labels.get("le"))
        if bound is not None:
            series.buckets[bound] = value


def _bucket_bound(le: str | None) -> float | None:
    try:
        return float(le) if le is not None else None
    except ValueError:
        return None


def _merge_histograms(key: LabelValues, series: list[_HistogramParts]) -> HistogramSeries | None:
    """One histogram per key; several (labels the engine has and we drop) are summed when their
    buckets line up. Incomplete histograms (no +Inf, count or sum) are left out."""
    complete = [s for s in series if _complete(s)]
    if not complete or len(complete) != len(series):
        return None
    bounds = sorted(complete[0].buckets)
    if any(sorted(s.buckets) != bounds for s in complete[1:]):
        return None
    buckets = tuple((b, math.fsum(s.buckets[b] for s in complete)) for b in bounds)
    count = math.fsum(s.count or 0.0 for s in complete)
    total = math.fsum(s.sum or 0.0 for s in complete)
    return HistogramSeries(key, buckets, count, total)


def _complete(series: _HistogramParts) -> bool:
    return series.count is not None and series.sum is not None and math.inf in series.buckets
