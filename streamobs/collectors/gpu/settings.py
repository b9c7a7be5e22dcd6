"""How the GPU collector samples NVML, and the figures efficiency is derived with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuCollectorConfig:
    enabled: bool = True
    interval: float = 10.0
    deadline: float = 3.0  # a hung NVML call is given up after this
    backoff_max: float = 300.0
    served_model_match: tuple[str, ...] = ("vllm",)
    price_per_gpu_hour: float | None = None
    gpu_count: int = 1
    efficiency_window: float = 60.0
