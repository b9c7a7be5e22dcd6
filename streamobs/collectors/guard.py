"""Every collector runs behind one guard that times its export, catches what it raises,
logs each change of state once and reports ``streamobs_collector_up{collector,target}`` and
``streamobs_collector_duration_seconds`` from what actually happened: a source that was
sampled but could not be exported is down. Host-wide collectors (gpu) report ``target=""``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from streamobs.collectors.by_name import merged_metrics
from streamobs.statelog import StateLog

log = logging.getLogger(__name__)

UP_METRIC = "streamobs_collector_up"
DURATION_METRIC = "streamobs_collector_duration_seconds"


@dataclass(frozen=True, slots=True)
class Health:
    """One source's last collection as exported: ``up`` only if it was sampled and its
    series were exported; ``duration_seconds`` is how long sampling it took."""

    collector: str
    target: str
    up: bool
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class Export:
    families: list[Metric]
    health: list[Health]


class Collector(Protocol):
    """A source sampled in the background (``start``/``stop``), exported on each scrape."""

    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def sources(self) -> Sequence[str]:
        """The targets it reports on (``("",)`` for a host-wide collector)."""
        ...

    def export(self) -> Export:
        """The families and health of the latest samples; may raise."""
        ...


def health_families(health: Iterable[Health]) -> list[Metric]:
    up = Metric(UP_METRIC, "1 if the collector's last collection worked and was exported.", "gauge")
    duration = Metric(DURATION_METRIC, "How long the collector's last collection took.", "gauge")
    for item in health:
        labels = {"collector": item.collector, "target": item.target}
        up.samples.append(Sample(UP_METRIC, labels, 1.0 if item.up else 0.0))
        duration.samples.append(Sample(DURATION_METRIC, dict(labels), item.duration_seconds))
    return [up, duration]


class GuardedCollectors:
    """A prometheus_client custom collector over every enabled collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collectors: tuple[Collector, ...] = ()
        self._states = StateLog(log)

    def set(self, collectors: Sequence[Collector]) -> None:
        with self._lock:
            self._collectors = tuple(collectors)

    def describe(self) -> list[Metric]:
        return health_families(())

    def collect(self) -> list[Metric]:
        with self._lock:
            collectors = self._collectors
        families: list[Metric] = []
        health: list[Health] = []
        for collector in collectors:
            started = time.perf_counter()
            try:
                export = collector.export()
            except Exception as exc:
                if self._states.changed(collector.name, repr(exc)):
                    log.error(
                        "collector %s: export failed, reporting it down",
                        collector.name,
                        exc_info=exc,
                    )
                seconds = time.perf_counter() - started
                health.extend(
                    Health(collector.name, t, False, seconds) for t in collector.sources()
                )
                continue
            if self._states.changed(collector.name, ""):
                log.info("collector %s: exports again", collector.name)
            families.extend(export.families)
            health.extend(export.health)
        # Collectors of the same series (each engine kind exports the normalised engine
        # families) are announced once, their samples together.
        return [*merged_metrics(families), *health_families(health)]
