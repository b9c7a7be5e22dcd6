"""The server's own view of what it is doing, from vLLM's ``/metrics``: how many requests
are running and how many tokens it has generated so far."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import TracebackType

from streamobs.collectors.engines.scrape import EngineSnapshot, scrape_engine

RUNNING = "vllm:num_requests_running"
GENERATED = "vllm:generation_tokens_total"
MAX_METRICS_BYTES = 8 << 20


class EngineUnavailable(Exception):
    """The metrics cannot say what the engine does; the message is one human line."""


@dataclass(frozen=True, slots=True)
class EngineCounts:
    running: float
    generated: float
    at: float  # time.monotonic() when the scrape completed


def counts_from(snapshot: EngineSnapshot, model: str, at: float) -> EngineCounts:
    """Both series for ``model``, summed over engines. A server whose label names the
    model differently (a served-model-name alias) is read as a whole."""
    if not snapshot.up:
        raise EngineUnavailable(f"cannot read {snapshot.url}: {snapshot.error}")
    values: dict[str, float] = {}
    for name in (RUNNING, GENERATED):
        samples = [
            sample
            for family in snapshot.families
            if family.exposed_name == name
            for sample in family.samples
            if sample.name == name
        ]
        if not samples:
            raise EngineUnavailable(f"{snapshot.url} has no {name} series (is it vLLM?)")
        mine = [s for s in samples if s.labels.get("model_name") == model] or samples
        values[name] = math.fsum(s.value for s in mine)
    return EngineCounts(running=values[RUNNING], generated=values[GENERATED], at=at)


class EngineWatch:
    """Repeated scrapes of one server."""

    def __init__(self, url: str, model: str, timeout: float) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout

    def read(self) -> EngineCounts:
        snapshot = scrape_engine(self.url, timeout=self.timeout, max_bytes=MAX_METRICS_BYTES)
        return counts_from(snapshot, self.model, time.monotonic())

    def close(self) -> None:
        """Nothing is kept between scrapes: each is an exchange of its own."""

    def __enter__(self) -> EngineWatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
