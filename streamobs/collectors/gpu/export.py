"""The Prometheus side of the GPU collector: reads the latest snapshot, does no I/O.

Per scrape it yields every family of ``gpu_names.GPU_METRICS`` (a family without samples
when no GPU provides it, or when the collector is down), and the collector's health
(``streamobs_collector_up{collector="gpu",target=""}``: NVML describes the host).
``export()`` never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from streamobs.collectors.gpu import names as names
from streamobs.collectors.gpu.snapshot import GpuDevice, GpuSnapshot
from streamobs.collectors.guard import Export, Health, health_families
from streamobs.statelog import StateLog

_log = logging.getLogger(__name__)

SnapshotSource = Callable[[], GpuSnapshot]

_SPECS = {spec.name: spec for spec in names.GPU_METRICS}


class GpuCollector:
    """A prometheus_client custom collector over the sampler's latest snapshot."""

    def __init__(self, snapshot: SnapshotSource) -> None:
        """``snapshot`` returns the latest snapshot (``GpuSampler.latest``)."""
        self._snapshot = snapshot
        self._states = StateLog(_log)

    def describe(self) -> list[Metric]:
        return [*(_metric(spec) for spec in names.GPU_METRICS), *health_families(())]

    def collect(self) -> list[Metric]:
        export = self.export()
        return [*export.families, *health_families(export.health)]

    def export(self) -> Export:
        families = {spec.name: _metric(spec) for spec in names.GPU_METRICS}
        snapshot = self._read()
        exported = False
        if snapshot is not None and snapshot.up:
            # Build everything first so a failure leaves no half-exported GPU behind.
            try:
                samples = [s for device in snapshot.devices for s in _device_samples(device)]
            except Exception as exc:
                self._log_state(f"cannot export GPU snapshot: {exc!r}", exc)
            else:
                for family, sample in samples:
                    families[family].samples.append(sample)
                exported = True
                self._log_state("", None)
        seconds = float(snapshot.duration_seconds) if snapshot is not None else 0.0
        health = Health(names.COLLECTOR_NAME, "", exported, seconds)
        return Export(list(families.values()), [health])

    def _read(self) -> GpuSnapshot | None:
        try:
            snapshot = self._snapshot()
        except Exception as exc:
            self._log_state(f"cannot read the GPU snapshot: {exc!r}", exc)
            return None
        return snapshot if isinstance(snapshot, GpuSnapshot) else None

    def _log_state(self, state: str, exc: Exception | None) -> None:
        # Once per change, not once per scrape; the sampler logs NVML's own state.
        if not self._states.changed("export", state):
            return
        if exc is not None:
            _log.error("%s; reporting the GPU collector down", state, exc_info=exc)
        else:
            _log.info("GPU snapshot exports again")


def _device_samples(device: GpuDevice) -> list[tuple[str, Sample]]:
    base = {"gpu": str(device.index), "uuid": device.uuid, "name": device.name}
    out = []
    for item in device.values:
        spec = _SPECS[item.metric]
        labels = {**base, **dict(item.labels)}
        if set(labels) != {*names.DEVICE_LABELS, *spec.labels}:
            raise ValueError(f"{item.metric}: unexpected labels {sorted(labels)}")
        out.append((spec.name, Sample(spec.name, labels, item.value)))
    for process in device.processes:
        labels = {
            **base,
            "pid": str(process.pid),
            "served_model": "1" if process.served_model else "0",
        }
        sample = Sample(names.PROCESS_MEMORY, labels, float(process.used_memory_bytes))
        out.append((names.PROCESS_MEMORY, sample))
    return out


def _metric(spec: names.GpuMetricSpec) -> Metric:
    # prometheus_client names counter families without _total and adds it on exposition.
    name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
    return Metric(name, spec.documentation, spec.kind)
