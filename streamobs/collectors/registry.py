"""The collectors streamobs knows, each with a name, whether it runs by default and how it
is built: ``--collector.NAME`` / ``--no-collector.NAME`` exist for each, and the daemon
runs the enabled ones behind the one guard (``guard.GuardedCollectors``). Each engine kind
is a collector of its own, a view of the one poller that scrapes every engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamobs.collectors.engines.kinds import KINDS
from streamobs.collectors.engines.poller import EnginePoller, KindView
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.collectors.gpu.settings import GpuCollectorConfig
from streamobs.collectors.guard import Collector


@dataclass(frozen=True, slots=True)
class CollectorContext:
    """Everything a factory may use: the one poller of every engine (its kind collectors
    are views of it; the daemon keeps it up to date) and the GPU settings."""

    engines: EnginePoller
    gpu: GpuCollectorConfig


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    default: bool
    help: str
    build: Callable[[CollectorContext], Collector]
    # Take a reloaded context in place; False: stop it and build it anew.
    update: Callable[[Collector, CollectorContext], bool]


def _kind_view(kind: str) -> Callable[[CollectorContext], Collector]:
    def build(context: CollectorContext) -> Collector:
        return context.engines.view(kind)

    return build


def _kind_update(collector: Collector, context: CollectorContext) -> bool:
    assert isinstance(collector, KindView)
    return collector.poller is context.engines


def _gpu(context: CollectorContext) -> Collector:
    return GpuSampler.from_settings(context.gpu)


def _gpu_update(collector: Collector, context: CollectorContext) -> bool:
    assert isinstance(collector, GpuSampler)
    return collector.settings == context.gpu


COLLECTORS: tuple[Registered, ...] = (
    *(
        Registered(
            kind.name,
            True,
            f"{kind.title}: the /metrics of every engine of this kind, scraped once (default: on)",
            _kind_view(kind.name),
            _kind_update,
        )
        for kind in KINDS
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


ENGINE_KIND_COLLECTORS: frozenset[str] = frozenset(kind.name for kind in KINDS)
