"""The configured SLOs as series: ``streamobs_slo_*{target}``, and ``{target, model}`` for
each model whose own SLO differs from its target's.

A model without a series of its own is judged by its target's (``{target}`` alone, no
``model`` label), so dashboards and rules that read the SLO per target keep working, and
one model's SLO is ``...{target="t", model="m"} or on (target) ...{target="t", model=""}``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from streamobs.export.prometheus.model_labels import model_label
from streamobs.targets import SLO, TargetConfig

FAMILIES = (
    ("streamobs_slo_ttft_threshold_seconds", "Configured TTFT SLO threshold.", "ttft_seconds"),
    ("streamobs_slo_tpot_threshold_seconds", "Configured TPOT SLO threshold.", "tpot_seconds"),
    (
        "streamobs_slo_objective_ratio",
        "Configured SLO objective (share of good probes).",
        "objective",
    ),
)


class SloGauges:
    """A registered collector; ``configure()`` takes the targets of each (re)loaded config."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slos: tuple[tuple[dict[str, str], SLO], ...] = ()

    def configure(self, targets: Sequence[TargetConfig]) -> None:
        slos: list[tuple[dict[str, str], SLO]] = []
        for target in targets:
            slos.append(({"target": target.name}, target.slo))
            for model, slo in target.model_slos():
                slos.append(({"model": model_label(model), "target": target.name}, slo))
        with self._lock:
            self._slos = tuple(slos)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            slos = self._slos
        families = []
        for name, documentation, field in FAMILIES:
            family = GaugeMetricFamily(name, documentation, labels=("target",))
            for labels, slo in slos:
                family.samples.append(Sample(name, labels, getattr(slo, field)))
            families.append(family)
        return families

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc) for name, doc, _ in FAMILIES]
