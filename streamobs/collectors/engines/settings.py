"""How the vLLM collector scrapes: its settings, as the daemon's config reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineCollectorConfig:
    enabled: bool = True
    timeout: float = 5.0
    max_bytes: int = 16 * 1024 * 1024
    reexpose: bool = True
