"""One family for every collector's health, so each source need not declare its own:
``streamobs_collector_up{collector,target}`` and ``streamobs_collector_duration_seconds``.
Host-wide collectors (gpu) report ``target=""``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric


@dataclass(frozen=True, slots=True)
class Health:
    collector: str
    target: str
    up: bool
    duration_seconds: float


HealthSource = Callable[[], Iterable[Health]]


class CollectorHealth:
    def __init__(self, sources: Iterable[HealthSource]) -> None:
        self._sources = tuple(sources)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ("collector", "target")
        up = GaugeMetricFamily(
            "streamobs_collector_up", "1 if the collector's last collection worked.", labels=labels
        )
        duration = GaugeMetricFamily(
            "streamobs_collector_duration_seconds",
            "How long the collector's last collection took.",
            labels=labels,
        )
        return up, duration

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        up, duration = self._families()
        for source in self._sources:
            for health in source():
                labels = (health.collector, health.target)
                up.add_metric(labels, 1.0 if health.up else 0.0)
                duration.add_metric(labels, health.duration_seconds)
        return [up, duration]
