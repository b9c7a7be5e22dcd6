"""``streamobs_target_info{target, engine, endpoint}``: which engine (model server) each
target reaches, so probe series (per target) join engine series (per engine):
``... * on (target) group_left (engine) streamobs_target_info``."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge

from streamobs.targets import TargetConfig


class TargetInfo:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauge = Gauge(
            "streamobs_target_info",
            "1 per configured target: the engine (model server) it reaches (empty: none "
            "scraped) and its endpoint; join probe series with engine series on it.",
            ("target", "engine", "endpoint"),
            registry=registry,
        )

    def configure(self, targets: Sequence[TargetConfig]) -> None:
        self._gauge.clear()
        for target in targets:
            self._gauge.labels(target.name, target.engine or "", target.target.endpoint).set(1)
