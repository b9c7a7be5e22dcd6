"""The collectors streamobs knows, each with a name, whether it runs by default and how it
is built: ``--collector.NAME`` / ``--no-collector.NAME`` exist for each, and the daemon
runs the enabled ones behind the one guard (``guard.GuardedCollectors``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamobs.collectors.engines.poller import EnginePoller, ScrapeTarget, SnapshotCallback
from streamobs.collectors.engines.settings import EngineCollectorConfig
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.collectors.gpu.settings import GpuCollectorConfig
from streamobs.collectors.guard import Collector


@dataclass(frozen=True, slots=True)
class CollectorContext:
    """Everything a factory may use: the scraped targets and each collector's settings."""

    targets: tuple[ScrapeTarget, ...]
    vllm: EngineCollectorConfig
    gpu: GpuCollectorConfig
    on_vllm_snapshot: SnapshotCallback | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    default: bool
    help: str
    build: Callable[[CollectorContext], Collector]
    # Take a reloaded context in place; False: stop it and build it anew.
    update: Callable[[Collector, CollectorContext], bool]


def _vllm(context: CollectorContext) -> Collector:
    return EnginePoller(context.targets, context.vllm, context.on_vllm_snapshot)


def _vllm_update(collector: Collector, context: CollectorContext) -> bool:
    assert isinstance(collector, EnginePoller)
    collector.update(context.targets, context.vllm)
    return True


def _gpu(context: CollectorContext) -> Collector:
    return GpuSampler.from_settings(context.gpu)


def _gpu_update(collector: Collector, context: CollectorContext) -> bool:
    assert isinstance(collector, GpuSampler)
    return collector.settings == context.gpu


COLLECTORS: tuple[Registered, ...] = (
    Registered(
        "vllm",
        True,
        "vLLM's own /metrics of every engine, scraped once (default: on)",
        _vllm,
        _vllm_update,
    ),
    Registered(
        "gpu",
        True,
        "NVIDIA GPUs through NVML (default: on, off in Kubernetes)",
        _gpu,
        _gpu_update,
    ),
)


def registered(name: str) -> Registered:
    for entry in COLLECTORS:
        if entry.name == name:
            return entry
    raise KeyError(name)


def names() -> Sequence[str]:
    return tuple(entry.name for entry in COLLECTORS)
