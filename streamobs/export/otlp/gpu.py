"""The GPU collector's series (``collectors.gpu_names``) over OTLP, from the sampler's latest
snapshot: the ``hw.*`` hardware conventions where one means the same thing, ``streamobs.gpu.*``
otherwise. Not mapped to a convention on purpose: NVML's memory "utilization" is bandwidth
busy time, not the used share ``hw.gpu.memory.utilization`` means (that one is derived from
used / total); PCIe throughput is a rate, not the byte counter ``hw.gpu.io`` is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from streamobs.collectors.gpu import names as g
from streamobs.collectors.gpu.snapshot import GpuDevice, GpuSnapshot
from streamobs.export.otlp.health import AttributeValue
from streamobs.export.otlp.names import RATIO
from streamobs.export.otlp.snapshots import (
    COLLECTOR_HEALTH,
    InstrumentKind,
    SeriesSource,
    SeriesSpec,
    SeriesValue,
)

GpuSnapshotSource = Callable[[], GpuSnapshot]

COLLECTOR_UP, COLLECTOR_DURATION = (spec.name for spec in COLLECTOR_HEALTH)
MEMORY_UTILIZATION = "hw.gpu.memory.utilization"
_HW_TYPE = {"hw.type": "gpu"}  # required by the component-generic hw.* metrics


@dataclass(frozen=True, slots=True)
class _Otel:
    name: str
    kind: InstrumentKind
    unit: str
    fixed: Mapping[str, AttributeValue] = field(default_factory=dict)


_MAPPED: dict[str, _Otel] = {
    g.UTILIZATION: _Otel("hw.gpu.utilization", "gauge", RATIO, {"hw.gpu.task": "general"}),
    g.MEMORY_UTILIZATION: _Otel("streamobs.gpu.memory.busy", "gauge", RATIO),
    g.MEMORY_USED: _Otel("hw.gpu.memory.usage", "updowncounter", "By"),
    g.MEMORY_FREE: _Otel("streamobs.gpu.memory.free", "updowncounter", "By"),
    g.MEMORY_TOTAL: _Otel("hw.gpu.memory.limit", "updowncounter", "By"),
    g.POWER_USAGE: _Otel("hw.power", "gauge", "W", _HW_TYPE),
    g.POWER_LIMIT: _Otel("streamobs.gpu.power.limit", "gauge", "W"),
    g.ENERGY: _Otel("hw.energy", "counter", "J", _HW_TYPE),
    g.TEMPERATURE: _Otel("hw.temperature", "gauge", "Cel", _HW_TYPE),
    g.SM_CLOCK: _Otel("streamobs.gpu.clock.sm", "gauge", "Hz"),
    g.MEMORY_CLOCK: _Otel("streamobs.gpu.clock.memory", "gauge", "Hz"),
    g.CLOCK_EVENT: _Otel("streamobs.gpu.clock_event.active", "gauge", RATIO),
    g.PCIE_TX: _Otel(
        "streamobs.gpu.pcie.throughput", "gauge", "By/s", {"network.io.direction": "transmit"}
    ),
    g.PCIE_RX: _Otel(
        "streamobs.gpu.pcie.throughput", "gauge", "By/s", {"network.io.direction": "receive"}
    ),
    g.FAN_SPEED: _Otel("streamobs.gpu.fan.speed_ratio", "gauge", RATIO),
    g.ECC_ERRORS: _Otel("hw.errors", "counter", "{error}", _HW_TYPE),
    g.RETIRED_PAGES: _Otel("streamobs.gpu.retired_pages", "gauge", "{page}"),
    g.RETIRED_PAGES_PENDING: _Otel("streamobs.gpu.retired_pages.pending", "gauge", RATIO),
    g.REMAPPED_ROWS: _Otel("streamobs.gpu.remapped_rows", "gauge", "{row}"),
    g.REMAPPED_ROWS_PENDING: _Otel("streamobs.gpu.remapped_rows.pending", "gauge", RATIO),
    g.REMAPPING_FAILED: _Otel("streamobs.gpu.remapping_failed", "gauge", RATIO),
    g.PROCESS_MEMORY: _Otel("streamobs.gpu.process.memory.usage", "updowncounter", "By"),
}
# Prometheus family name -> OTLP instrument name.
GPU_NAMES: Mapping[str, str] = {source: otel.name for source, otel in _MAPPED.items()}
# The metrics' own labels as attributes.
_LABELS = {
    "reason": "streamobs.gpu.clock_event.reason",
    "error_type": "error.type",
    "cause": "streamobs.gpu.cause",
}


def _specs() -> tuple[SeriesSpec, ...]:
    docs = {spec.name: spec.documentation for spec in g.GPU_METRICS}
    seen: dict[str, SeriesSpec] = {}
    for source, otel in _MAPPED.items():
        description = docs[source]
        if source in (g.PCIE_TX, g.PCIE_RX):
            description = "PCIe bytes per second through the GPU, by network.io.direction."
        seen.setdefault(otel.name, SeriesSpec(otel.name, otel.kind, otel.unit, description))
    return (
        *seen.values(),
        SeriesSpec(MEMORY_UTILIZATION, "gauge", RATIO, "Share of device memory in use."),
        *COLLECTOR_HEALTH,
    )


GPU_SERIES: tuple[SeriesSpec, ...] = _specs()


def gpu_series(latest: GpuSnapshotSource) -> SeriesSource:
    """Every device's values and the collector's health (``streamobs.collector=gpu``)."""

    def read() -> Iterator[SeriesValue]:
        snapshot = latest()
        health: dict[str, AttributeValue] = {"streamobs.collector": "gpu"}
        yield SeriesValue(COLLECTOR_UP, health, 1.0 if snapshot.up else 0.0)
        yield SeriesValue(COLLECTOR_DURATION, health, snapshot.duration_seconds)
        if not snapshot.up:
            return
        for device in snapshot.devices:
            yield from _device_series(device)

    return read


def _device_series(device: GpuDevice) -> Iterator[SeriesValue]:
    base: dict[str, AttributeValue] = {
        "hw.id": device.uuid,
        "hw.name": device.name,
        "hw.vendor": "NVIDIA",
        "streamobs.gpu.index": device.index,
    }
    for item in device.values:
        otel = _MAPPED.get(item.metric)
        if otel is None:
            continue  # a series added to the collector and not mapped yet
        own = {_LABELS.get(k, f"streamobs.gpu.{k}"): v for k, v in item.labels}
        yield SeriesValue(otel.name, {**base, **otel.fixed, **own}, item.value)
    used, total = device.value(g.MEMORY_USED), device.value(g.MEMORY_TOTAL)
    if used is not None and total:
        yield SeriesValue(MEMORY_UTILIZATION, base, used / total)
    memory = _MAPPED[g.PROCESS_MEMORY].name
    for process in device.processes:
        attributes = {
            **base,
            "process.pid": process.pid,
            "streamobs.gpu.served_model": process.served_model,
        }
        yield SeriesValue(memory, attributes, float(process.used_memory_bytes))
