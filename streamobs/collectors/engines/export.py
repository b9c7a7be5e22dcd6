"""The Prometheus side of the vLLM collector: reads snapshots, does no I/O.

Per scrape it yields, for every engine (one vLLM server's /metrics, scraped once whatever
the number of targets that reach it):
- with ``reexpose=True``, vLLM's own families unchanged. With one engine the samples are
  exactly vLLM's (names, labels, values), so streamobs can stand in for vLLM as the pod's
  only scrape target. With several engines every re-exposed sample gains
  ``engine="<name>"``, so identical vLLM series from different servers do not collide
  (vLLM's own ``engine`` label, its engine core index, becomes ``exported_engine``, as
  Prometheus does without ``honor_labels``). "Several" counts the configured engines, so
  the labels do not change while one of them is down. ``reexpose_prefixes`` limits
  re-exposure to some families, e.g. ``("vllm:",)`` when the registry also holds
  streamobs' own ``process_*``/``python_*`` collectors, whose names vLLM's process metrics
  share.
- the normalised ``streamobs_engine_*`` families (labels ``engine``, ``model``,
  ``engine_index``, plus the metric's own such as ``finished_reason``); an engine that is
  down has none;
- the health of every engine (``export()``; ``collect()`` renders it as
  ``streamobs_collector_up{collector="vllm",target="<engine>"}`` and ``_duration_seconds``),
  including engines not scraped yet (down, 0 s): up only when its series were exported.

Whatever the snapshots hold, ``export()`` does not raise: an engine whose export fails is
reported down, and failures are logged once per change of state, not once per scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from streamobs.collectors.engines.names import NORMALISED, NormalisedSpec
from streamobs.collectors.engines.normalise import NormalisedFamily
from streamobs.collectors.engines.parse import ParsedFamily
from streamobs.collectors.engines.scrape import EngineSnapshot
from streamobs.collectors.guard import Export, Health, health_families
from streamobs.statelog import StateLog

_log = logging.getLogger(__name__)

COLLECTOR_NAME = "vllm"

SnapshotSource = Callable[[], Mapping[str, EngineSnapshot]]

# The ``le`` spelling prometheus_client (and so vLLM) uses; the library leaves it untyped.
_format_bound: Callable[[float], str] = floatToGoString


class EngineExporter:
    """A prometheus_client custom collector over the latest snapshot of each target."""

    def __init__(
        self,
        snapshots: SnapshotSource,
        *,
        targets: Sequence[str] = (),
        reexpose: bool = False,
        reexpose_prefixes: Sequence[str] | None = None,
        normalise: bool = True,
    ) -> None:
        """``snapshots`` returns the latest snapshot per target name; ``targets`` are the
        configured names, which get series even before their first scrape."""
        self._snapshots = snapshots
        self._targets = tuple(targets)
        self._reexpose = reexpose
        self._prefixes = tuple(reexpose_prefixes) if reexpose_prefixes is not None else None
        self._normalise = normalise
        self._states = StateLog(_log)

    def set_targets(self, targets: Sequence[str]) -> None:
        self._targets = tuple(targets)

    def describe(self) -> list[Metric]:
        """The families known in advance (vLLM's own are not), so registering does no I/O."""
        families = [_normalised_metric(spec) for spec in NORMALISED]
        return [*families, *health_families(())]

    def collect(self) -> list[Metric]:
        export = self.export()
        return [*export.families, *health_families(export.health)]

    def export(self) -> Export:
        latest = self._read_snapshots()
        targets = [*self._targets, *(t for t in latest if t not in self._targets)]
        reexposed = _Reexposed(label_engine=len(targets) > 1)
        normalised = {spec.name: _normalised_metric(spec) for spec in NORMALISED}
        health = []
        for target in targets:
            snapshot = latest.get(target)
            exported = self._export_target(target, snapshot, reexposed, normalised)
            health.append(Health(COLLECTOR_NAME, target, exported, _duration(snapshot)))
        own = list(normalised.values()) if self._normalise else []
        return Export([*reexposed.metrics(), *own], health)

    def _read_snapshots(self) -> Mapping[str, EngineSnapshot]:
        try:
            latest = {str(target): snapshot for target, snapshot in self._snapshots().items()}
        except Exception as exc:
            if self._states.changed("snapshots", repr(exc)):
                _log.error("cannot read vLLM snapshots, reporting every target down: %r", exc)
            return {}
        if self._states.changed("snapshots", ""):
            _log.info("vLLM snapshots readable again")
        return latest

    def _export_target(
        self,
        target: str,
        snapshot: object,
        reexposed: _Reexposed,
        normalised: dict[str, Metric],
    ) -> bool:
        """Add one target's series; True when it is up and everything was exported."""
        if not isinstance(snapshot, EngineSnapshot):
            return False  # not scraped yet
        self._log_target_state(target, snapshot)
        if not snapshot.up:
            return False
        # Build everything first so a failure leaves no half-exported target behind.
        try:
            families = self._reexposed_families(snapshot) if self._reexpose else []
            prepared = reexposed.prepare(target, families)
            samples = _normalised_samples(target, snapshot.normalised)
        except Exception as exc:
            if self._states.changed(f"export {target}", repr(exc)):
                _log.error("cannot export vLLM target %s, reporting it down", target, exc_info=exc)
            return False
        if self._states.changed(f"export {target}", ""):
            _log.info("vLLM target %s exports again", target)
        conflicts = ", ".join(reexposed.merge(prepared))
        if self._states.changed(f"conflicts {target}", conflicts) and conflicts:
            _log.warning(
                "vLLM target %s: not re-exposing %s, already exposed with another type",
                target,
                conflicts,
            )
        for name, family_samples in samples:
            normalised[name].samples.extend(family_samples)
        return True

    def _reexposed_families(self, snapshot: EngineSnapshot) -> list[ParsedFamily]:
        if self._prefixes is None:
            return list(snapshot.families)
        return [f for f in snapshot.families if f.name.startswith(self._prefixes)]

    def _log_target_state(self, target: str, snapshot: EngineSnapshot) -> None:
        # A new error is a new state: "refused" turning into "HTTP 500" is worth a line.
        state = "" if snapshot.up else f"down: {snapshot.error}"
        if not self._states.changed(f"target {target}", state):
            return
        if snapshot.up:
            _log.info("vLLM target %s is up again", target)
        else:
            _log.warning("vLLM target %s is down: %s", target, snapshot.error)


def _duration(snapshot: object) -> float:
    if isinstance(snapshot, EngineSnapshot) and isinstance(snapshot.duration_seconds, float):
        return snapshot.duration_seconds
    return 0.0


def _normalised_metric(spec: NormalisedSpec) -> Metric:
    # prometheus_client names counter families without _total and adds it on exposition.
    name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
    return Metric(name, spec.documentation, spec.kind)


def _normalised_samples(
    engine: str, families: Iterable[NormalisedFamily]
) -> list[tuple[str, list[Sample]]]:
    out = []
    for family in families:
        names = ("engine", *family.label_names)
        samples = [
            Sample(family.spec.name, dict(zip(names, (engine, *s.labels), strict=True)), s.value)
            for s in family.scalars
        ]
        for histogram in family.histograms:
            labels = dict(zip(names, (engine, *histogram.labels), strict=True))
            samples.extend(_histogram_samples(family.spec.name, labels, histogram.buckets))
            samples.append(Sample(family.spec.name + "_count", labels, histogram.count))
            samples.append(Sample(family.spec.name + "_sum", labels, histogram.sum))
        out.append((family.spec.name, samples))
    return out


def _histogram_samples(
    name: str, labels: dict[str, str], buckets: Iterable[tuple[float, float]]
) -> list[Sample]:
    return [
        Sample(name + "_bucket", {**labels, "le": _format_bound(bound)}, count)
        for bound, count in buckets
    ]


class _Reexposed:
    """vLLM's families from all targets, merged by name so each is announced once."""

    def __init__(self, label_engine: bool) -> None:
        self._label_engine = label_engine
        self._metrics: dict[str, Metric] = {}

    def prepare(self, target: str, families: Iterable[ParsedFamily]) -> list[tuple[str, Metric]]:
        """One target's families as metrics, keyed by exposed name; nothing merged yet."""
        prepared = []
        for family in families:
            metric = Metric(family.name, family.documentation, family.type)
            if self._label_engine:
                metric.samples = [_with_engine(s, target) for s in family.samples]
            else:
                metric.samples = list(family.samples)
            prepared.append((family.exposed_name, metric))
        return prepared

    def merge(self, prepared: Iterable[tuple[str, Metric]]) -> list[str]:
        """Add prepared families; returns the names skipped because an earlier target (or
        an earlier family of this one) has a family of that name with another type."""
        conflicts = []
        for name, metric in prepared:
            kept = self._metrics.setdefault(name, metric)
            if kept is metric:
                continue
            if kept.type != metric.type:
                conflicts.append(name)
                continue
            kept.samples.extend(metric.samples)
        return conflicts

    def metrics(self) -> list[Metric]:
        return list(self._metrics.values())


def _with_engine(sample: Sample, target: str) -> Sample:
    labels = dict(sample.labels)
    if "engine" in labels:
        labels["exported_engine"] = labels.pop("engine")
    labels["engine"] = target
    return sample._replace(labels=labels)
