"""Recent probe results per target, for the status page (bounded, thread-safe, read-only views)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from streamobs.probe.result import ProbeResult
from streamobs.targets import TargetConfig

RECENT = 20


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: TargetConfig
    recent: tuple[ProbeResult, ...]  # newest first
    last_error: ProbeResult | None

    @property
    def sli(self) -> float | None:
        """Share of recent probes that succeeded with TTFT under the SLO threshold, out of
        those that count for it (degraded successes do not: their TTFT is not known)."""
        eligible = [r for r in self.recent if not r.ok or r.exact]
        if not eligible:
            return None
        threshold_ns = self.target.slo.ttft_seconds * 1e9
        good = sum(
            1
            for r in eligible
            if r.ok and r.first_token_ns is not None and r.first_token_ns <= threshold_ns
        )
        return good / len(eligible)


class StatusBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, TargetConfig] = {}
        self._recent: dict[str, deque[ProbeResult]] = {}
        self._last_error: dict[str, ProbeResult] = {}

    def configure(self, targets: Sequence[TargetConfig]) -> None:
        """Targets of a (re)loaded config; a kept target keeps its history."""
        with self._lock:
            self._targets = {t.name: t for t in targets}
            self._recent = {n: self._recent.get(n, deque(maxlen=RECENT)) for n in self._targets}
            self._last_error = {n: r for n, r in self._last_error.items() if n in self._targets}

    def record(self, target: TargetConfig, result: ProbeResult) -> None:
        # A summary, not the whole record: per-token arrivals (up to max_events of them)
        # are what the page never shows and what made 20 results per target costly.
        result = replace(result, token_arrivals_ns=())
        with self._lock:
            recent = self._recent.get(target.name)
            if recent is None:
                return  # the target left the config while this probe ran
            recent.appendleft(result)
            if not result.ok:
                self._last_error[target.name] = result

    def snapshot(self) -> Sequence[TargetStatus]:
        with self._lock:
            return tuple(
                TargetStatus(t, tuple(self._recent[name]), self._last_error.get(name))
                for name, t in self._targets.items()
            )
