"""The simulator's ``/metrics``, in the format of each engine kind it can stand in for."""

from streamobs.simulator.engines.base import FINISHED_REASONS, EngineMetrics, Running
from streamobs.simulator.engines.litellm import LitellmMetrics
from streamobs.simulator.engines.llamacpp import LlamacppMetrics
from streamobs.simulator.engines.sglang import SglangMetrics
from streamobs.simulator.engines.tgi import TgiMetrics
from streamobs.simulator.engines.trtllm import TrtllmMetrics
from streamobs.simulator.engines.vllm import VllmMetrics

# Kind name → its metrics; the first is the default.
KINDS: dict[str, type[EngineMetrics]] = {
    cls.kind: cls
    for cls in (
        VllmMetrics,
        SglangMetrics,
        TrtllmMetrics,
        LlamacppMetrics,
        TgiMetrics,
        LitellmMetrics,
    )
}
ENGINE_KINDS: tuple[str, ...] = tuple(KINDS)


def engine_metrics(kind: str, kv_cache_tokens: int) -> EngineMetrics:
    """The metrics of engine ``kind`` (one of ``ENGINE_KINDS``)."""
    return KINDS[kind](kv_cache_tokens)


__all__ = [
    "ENGINE_KINDS",
    "FINISHED_REASONS",
    "KINDS",
    "EngineMetrics",
    "LitellmMetrics",
    "LlamacppMetrics",
    "Running",
    "SglangMetrics",
    "TgiMetrics",
    "TrtllmMetrics",
    "VllmMetrics",
    "engine_metrics",
]
