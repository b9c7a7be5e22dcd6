"""The Prometheus side of the engine collector: reads snapshots, does no I/O.

Per scrape it yields, for every engine (one model server's /metrics, scraped once whatever
the number of targets that reach it):
- with ``reexpose=True``, the engine's own families unchanged. With one engine the samples
  are exactly the engine's (names, labels, values), so streamobs can stand in for it as the
  pod's only scrape target. With several engines every re-exposed sample gains
  ``engine="<name>"``, so identical series from different servers do not collide (an
  engine's own ``engine`` label, vLLM's engine core index, becomes ``exported_engine``, as
  Prometheus does without ``honor_labels``). "Several" counts the configured engines, so
  the labels do not change while one of them is down.
- the normalised ``streamobs_engine_*`` families (labels ``engine``, ``kind``, ``model``,
  ``engine_index``, plus the metric's own such as ``finished_reason``); an engine that is
  down, or whose kind is unknown, has none;
- the health of every engine (``export()``; ``collect()`` renders it as
  ``streamobs_collector_up{collector="<kind>",target="<engine>"}`` and
  ``_duration_seconds``, ``collector="engine"`` while the kind is unknown), including
  engines not scraped yet (down, 0 s): up only when its series were exported.

Whatever the snapshots hold, ``export()`` does not raise: an engine whose export fails is
reported down, and failures are logged once per change of state, not once per scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from streamobs.collectors.by_name import ByName, joined
from streamobs.collectors.engines.kinds import reexposed
from streamobs.collectors.engines.names import NORMALISED, NormalisedSpec
from streamobs.collectors.engines.normalise import NormalisedFamily
from streamobs.collectors.engines.parse import ParsedFamily
from streamobs.collectors.engines.scrape import EngineSnapshot
from streamobs.collectors.guard import Export, Health, health_families
from streamobs.statelog import StateLog

_log = logging.getLogger(__name__)

# The collector name of an engine whose kind is not known (not configured, not scraped
# yet or not recognised); a known kind's engines are reported under the kind's name.
UNRESOLVED = "engine"

SnapshotSource = Callable[[], Mapping[str, EngineSnapshot]]

# The ``le`` spelling prometheus_client (and so vLLM, SGLang, ...) uses; untyped there.
_format_bound: Callable[[float], str] = floatToGoString


class EngineExporter:
    """A prometheus_client custom collector over the latest snapshot of each target."""

    def __init__(
        self,
        snapshots: SnapshotSource,
        *,
        targets: Sequence[str] | Mapping[str, str | None] = (),
        reexpose: bool = False,
        engine_families_only: bool = False,
        normalise: bool = True,
    ) -> None:
        """``snapshots`` returns the latest snapshot per engine name; ``targets`` are the
        configured engines (with their configured kind, None: recognised from the scrape),
        which get health series even before their first scrape. ``engine_families_only``
        re-exposes only the engine's own families (see ``kinds.reexposed``), not the
        ``process_*``/``python_*`` series engine processes share with streamobs."""
        self._snapshots = snapshots
        self.set_targets(targets)
        self._reexpose = reexpose
        self._engine_only = engine_families_only
        self._normalise = normalise
        self._states = StateLog(_log)

    def set_targets(self, targets: Sequence[str] | Mapping[str, str | None]) -> None:
        kinds = targets if isinstance(targets, Mapping) else dict.fromkeys(targets)
        self._kinds: dict[str, str | None] = dict(kinds)
        self._targets = tuple(kinds)

    def describe(self) -> list[Metric]:
        """The families known in advance (the engines' own are not), so registering does no I/O."""
        families = [_normalised_metric(spec) for spec in NORMALISED]
        return [*families, *health_families(())]

    def collect(self) -> list[Metric]:
        export = self.export()
        return [*export.families, *health_families(export.health)]

    def kind_of(self, target: str, snapshot: object) -> str | None:
        """The configured kind, else the one the latest scrape recognised."""
        configured = self._kinds.get(target)
        if configured is not None:
            return configured
        return snapshot.kind if isinstance(snapshot, EngineSnapshot) else None

    def export(
        self, kinds: Collection[str | None] | None = None, only: str | None = None
    ) -> Export:
        """Series and health of the engines whose kind is in ``kinds`` (None: every
        engine; None in it: the engines of unknown kind); ``only``: of that engine alone,
        labelled as among all of them."""
        latest = self._read_snapshots()
        targets = [*self._targets, *(t for t in latest if t not in self._targets)]
        reexposed = _Reexposed(label_engine=len(targets) > 1)
        normalised = {spec.name: _normalised_metric(spec) for spec in NORMALISED}
        health = []
        for target in targets:
            if only is not None and target != only:
                continue
            snapshot = latest.get(target)
            kind = self.kind_of(target, snapshot)
            if kinds is not None and kind not in kinds:
                continue
            exported = self._export_target(target, snapshot, reexposed, normalised)
            health.append(Health(kind or UNRESOLVED, target, exported, _duration(snapshot)))
        own = list(normalised.values()) if self._normalise else []
        return Export([*reexposed.metrics(), *own], health)

    def _read_snapshots(self) -> Mapping[str, EngineSnapshot]:
        try:
            latest = {str(target): snapshot for target, snapshot in self._snapshots().items()}
        except Exception as exc:
            if self._states.changed("snapshots", repr(exc)):
                _log.error("cannot read engine snapshots, reporting every engine down: %r", exc)
            return {}
        if self._states.changed("snapshots", ""):
            _log.info("engine snapshots readable again")
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
            kind = self.kind_of(target, snapshot) or ""
            samples = _normalised_samples(target, kind, snapshot.normalised)
        except Exception as exc:
            if self._states.changed(f"export {target}", repr(exc)):
                _log.error("cannot export engine %s, reporting it down", target, exc_info=exc)
            return False
        if self._states.changed(f"export {target}", ""):
            _log.info("engine %s exports again", target)
        conflicts = ", ".join(reexposed.merge(prepared))
        if self._states.changed(f"conflicts {target}", conflicts) and conflicts:
            _log.warning(
                "engine %s: not re-exposing %s, already exposed with another type",
                target,
                conflicts,
            )
        for name, family_samples in samples:
            normalised[name].samples.extend(family_samples)
        return True

    def _reexposed_families(self, snapshot: EngineSnapshot) -> list[ParsedFamily]:
        if not self._engine_only:
            return list(snapshot.families)
        return [f for f in snapshot.families if reexposed(f.name, snapshot.kind)]

    def _log_target_state(self, target: str, snapshot: EngineSnapshot) -> None:
        # A new error is a new state: "refused" turning into "HTTP 500" is worth a line.
        state = "" if snapshot.up else f"down: {snapshot.error}"
        if self._states.changed(f"target {target}", state):
            if snapshot.up:
                _log.info("engine %s is up again", target)
            else:
                _log.warning("engine %s is down: %s", target, snapshot.error)
        if not snapshot.up:
            return
        configured = self._kinds.get(target)
        unknown = "" if configured is not None else snapshot.kind_unknown
        if self._states.changed(f"kind {target}", unknown or (snapshot.kind or "")):
            if unknown:
                _log.warning(
                    "engine %s: kind unknown, re-exposing its series without normalising them: %s",
                    target,
                    unknown,
                )
            elif configured is None and snapshot.kind is not None:
                _log.info("engine %s: recognised as %s", target, snapshot.kind)


def _duration(snapshot: object) -> float:
    if isinstance(snapshot, EngineSnapshot) and isinstance(snapshot.duration_seconds, float):
        return snapshot.duration_seconds
    return 0.0


def _normalised_metric(spec: NormalisedSpec) -> Metric:
    # prometheus_client names counter families without _total and adds it on exposition.
    name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
    return Metric(name, spec.documentation, spec.kind)


def _normalised_samples(
    engine: str, kind: str, families: Iterable[NormalisedFamily]
) -> list[tuple[str, list[Sample]]]:
    out = []
    for family in families:
        names = ("engine", "kind", *family.label_names)
        samples = [
            Sample(
                family.spec.name,
                dict(zip(names, (engine, kind, *s.labels), strict=True)),
                s.value,
            )
            for s in family.scalars
        ]
        for histogram in family.histograms:
            labels = dict(zip(names, (engine, kind, *histogram.labels), strict=True))
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
    """The engines' own families, merged by name so each is announced once."""

    def __init__(self, label_engine: bool) -> None:
        self._label_engine = label_engine
        self._by_name: ByName[Metric] = ByName()

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
        add = self._by_name.add
        return [name for name, metric in prepared if not add(name, metric.type, metric)]

    def metrics(self) -> list[Metric]:
        return [joined(group) for group in self._by_name.groups()]


def _with_engine(sample: Sample, target: str) -> Sample:
    labels = dict(sample.labels)
    if "engine" in labels:
        labels["exported_engine"] = labels.pop("engine")
    labels["engine"] = target
    return sample._replace(labels=labels)
