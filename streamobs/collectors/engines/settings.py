"""How the engine collectors scrape: their settings, as the daemon's config reads them."""

from __future__ import annotations

from dataclasses import dataclass

from streamobs.collectors.engines.kinds import KIND_NAMES


@dataclass(frozen=True, slots=True)
class EngineCollectorConfig:
    """``kinds``: the engine kinds whose collector is on (``--[no-]collector.KIND``); an
    engine of a kind that is off is neither normalised nor re-exposed."""

    kinds: frozenset[str] = frozenset(KIND_NAMES)
    timeout: float = 5.0
    max_bytes: int = 16 * 1024 * 1024
    reexpose: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)
