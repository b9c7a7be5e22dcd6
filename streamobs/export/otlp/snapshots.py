"""Series read from the latest snapshots of a collector (vLLM now, GPUs later).

A source is a callable that returns the current values from snapshots already in memory:
it runs on the metric reader's thread at every export and must do no I/O. Scalars become
observable instruments. Histograms a server already aggregated (vLLM's buckets) have no
observable instrument in OpenTelemetry, so they are turned into cumulative OTLP histogram
points at export time, keeping the server's own bucket boundaries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from streamobs.export.otlp.health import AttributeKey, AttributeValue, SeriesGuard, attribute_key

log = logging.getLogger(__name__)

InstrumentKind = Literal["gauge", "counter", "updowncounter"]


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    name: str
    kind: InstrumentKind  # counter: a cumulative, monotonic value read from the source
    unit: str
    description: str


@dataclass(frozen=True, slots=True)
class SeriesValue:
    name: str
    attributes: Mapping[str, AttributeValue]
    value: float


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """A server-side cumulative histogram: ``cumulative[i]`` observations were at most
    ``bounds[i]``; the last entry (one more than ``bounds``) is the +Inf bucket."""

    name: str
    unit: str
    description: str
    attributes: Mapping[str, AttributeValue]
    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float


SeriesSource = Callable[[], Iterable[SeriesValue]]
HistogramSource = Callable[[], Iterable[HistogramValue]]


class _SourceErrors:
    """A failing source is logged when it starts and stops failing, not at every export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}

    def failed(self, source: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._failing.get(source) == message:
                return
            self._failing[source] = message
        log.error("OTLP: cannot read %s, its series are left out: %s", source, message)

    def worked(self, source: str) -> None:
        with self._lock:
            if self._failing.pop(source, None) is None:
                return
        log.info("OTLP: %s readable again", source)


_errors = _SourceErrors()


class ObservedSeries:
    """Observable instruments by name. Several sources may feed one name (collector health
    comes from every collector): the instrument observes them all."""

    def __init__(self, meter: Meter, guard: SeriesGuard) -> None:
        self._meter = meter
        self._guard = guard
        self._lock = threading.Lock()
        self._sources: dict[str, list[SeriesSource]] = {}

    def add(self, specs: Sequence[SeriesSpec], source: SeriesSource) -> None:
        for spec in specs:
            with self._lock:
                sources = self._sources.get(spec.name)
                if sources is not None:
                    sources.append(source)
                    continue
                self._sources[spec.name] = [source]
            self._create(spec)

    def _create(self, spec: SeriesSpec) -> None:
        callbacks = [_observer(spec.name, self._read_all(spec.name), self._guard)]
        if spec.kind == "gauge":
            self._meter.create_observable_gauge(spec.name, callbacks, spec.unit, spec.description)
        elif spec.kind == "counter":
            self._meter.create_observable_counter(spec.name, callbacks, spec.unit, spec.description)
        else:
            self._meter.create_observable_up_down_counter(
                spec.name, callbacks, spec.unit, spec.description
            )

    def _read_all(self, name: str) -> SeriesSource:
        def read() -> Iterator[SeriesValue]:
            with self._lock:
                sources = list(self._sources[name])
            for source in sources:
                yield from source()

        return read


COLLECTOR_HEALTH: tuple[SeriesSpec, ...] = (
    SeriesSpec(
        "streamobs.collector.up", "gauge", "1", "Whether the collector's last collection worked."
    ),
    SeriesSpec(
        "streamobs.collector.duration",
        "gauge",
        "s",
        "How long the collector's last collection took.",
    ),
)


def _observer(
    name: str, source: SeriesSource, guard: SeriesGuard
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        try:
            values = [v for v in source() if v.name == name]
        except Exception as exc:  # the SDK would log it at every export
            _errors.failed(name, exc)
            return []
        _errors.worked(name)
        return [
            Observation(v.value, dict(v.attributes))
            for v in values
            if guard.admit(name, v.attributes)
        ]

    return observe


class HistogramProducer:
    """Turns histogram sources into OTLP metrics; a series' start time is when it was first
    seen, moved on when its count goes down (the server restarted)."""

    def __init__(self, guard: SeriesGuard) -> None:
        self._guard = guard
        self._sources: list[HistogramSource] = []
        self._lock = threading.Lock()
        self._starts: dict[tuple[str, AttributeKey], tuple[int, int]] = {}

    def add(self, source: HistogramSource) -> None:
        with self._lock:
            self._sources.append(source)

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        with self._lock:
            sources = list(self._sources)
        by_name: dict[str, tuple[HistogramValue, list[HistogramDataPoint]]] = {}
        for source in sources:
            try:
                values = list(source())
            except Exception as exc:
                _errors.failed("server histograms", exc)
                continue
            _errors.worked("server histograms")
            for value in values:
                if not self._guard.admit(value.name, value.attributes):
                    continue
                point = self._point(value, now)
                by_name.setdefault(value.name, (value, []))[1].append(point)
        return [
            Metric(
                name=first.name,
                description=first.description,
                unit=first.unit,
                data=Histogram(
                    data_points=points,
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                ),
            )
            for first, points in by_name.values()
        ]

    def _point(self, value: HistogramValue, now: int) -> HistogramDataPoint:
        counts = [round(c) for c in value.cumulative]
        total = counts[-1] if counts else 0
        key = (value.name, attribute_key(value.attributes))
        with self._lock:
            start, last = self._starts.get(key, (now, total))
            if total < last:
                start = now
            self._starts[key] = (start, total)
        buckets = [max(b - a, 0) for a, b in zip([0, *counts[:-1]], counts, strict=True)]
        unknown: Any = None  # leaves the optional min and max unset in the OTLP message
        return HistogramDataPoint(
            attributes=dict(value.attributes),
            start_time_unix_nano=start,
            time_unix_nano=now,
            count=total,
            sum=value.sum,
            bucket_counts=buckets,
            explicit_bounds=list(value.bounds),
            min=unknown,
            max=unknown,
        )
