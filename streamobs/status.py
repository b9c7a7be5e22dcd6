"""Recent probe results per target and model, for the status page (bounded, thread-safe,
read-only views)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from streamobs.export.prometheus.model_labels import model_label
from streamobs.probe.result import ProbeResult
from streamobs.targets import SLO, TargetConfig

RECENT = 20


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: TargetConfig
    recent: tuple[ProbeResult, ...]  # newest first
    last_error: ProbeResult | None
    # The model label of these probes; None for a target probing the one model it
    # discovers (its probes, whatever model they named, are in one history).
    model: str | None = None

    @property
    def slo(self) -> SLO:
        """The SLO these probes are judged by: their model's own, else the target's."""
        for configured in self.target.models:
            if configured.slo is not None and model_label(configured.name) == self.model:
                return configured.slo
        return self.target.slo

    @property
    def sli(self) -> float | None:
        """Share of recent probes that succeeded with TTFT under the SLO threshold, out of
        those that count for it (degraded successes do not: their TTFT is not known)."""
        eligible = [r for r in self.recent if not r.ok or r.exact]
        if not eligible:
            return None
        threshold_ns = self.slo.ttft_seconds * 1e9
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
        # target -> model label -> recent results; configured models first, in their order.
        self._recent: dict[str, dict[str, deque[ProbeResult]]] = {}
        self._last_error: dict[tuple[str, str], ProbeResult] = {}

    def configure(self, targets: Sequence[TargetConfig]) -> None:
        """Targets of a (re)loaded config; a kept target keeps its history (of the models
        it still lists, when it lists them)."""
        with self._lock:
            self._targets = {t.name: t for t in targets}
            recent: dict[str, dict[str, deque[ProbeResult]]] = {}
            for name, target in self._targets.items():
                old = self._recent.get(name, {})
                if target.models:
                    labels = [model_label(m.name) for m in target.models]
                    recent[name] = {m: old.get(m, deque(maxlen=RECENT)) for m in labels}
                else:
                    recent[name] = old
            self._recent = recent
            self._last_error = {
                key: r for key, r in self._last_error.items() if key[1] in recent.get(key[0], ())
            }

    def forget_models(self, target: str, kept: Iterable[str]) -> None:
        """Drop the history of ``target``'s models but ``kept`` (labels)."""
        kept = frozenset(kept)
        with self._lock:
            models = self._recent.get(target)
            if models is None:
                return
            self._recent[target] = {m: r for m, r in models.items() if m in kept}
            for key in [k for k in self._last_error if k[0] == target and k[1] not in kept]:
                del self._last_error[key]

    def record(self, target: TargetConfig, result: ProbeResult) -> None:
        # A summary, not the whole record: per-token arrivals (up to max_events of them)
        # are what the page never shows and what made 20 results per target costly.
        result = replace(result, token_arrivals_ns=())
        with self._lock:
            models = self._recent.get(target.name)
            if models is None:
                return  # the target left the config while this probe ran
            key = _key(target, result.model)
            recent = models.get(key)
            if recent is None:
                if target.models:
                    return  # a model taken out of its list while this probe ran
                # Bounded: result.model is a model label, at most max_models per target.
                recent = models[key] = deque(maxlen=RECENT)
            recent.appendleft(result)
            if not result.ok:
                self._last_error[(target.name, key)] = result

    def snapshot(self) -> Sequence[TargetStatus]:
        """One entry per target, in the config's order, or per target and model for a
        target with several (listed, or ``model: all``); one with none probed yet has one
        entry with no results."""
        with self._lock:
            out = []
            for name, t in self._targets.items():
                models = self._recent[name]
                if not models:
                    out.append(TargetStatus(t, (), None))
                for key, recent in models.items():
                    error = self._last_error.get((name, key))
                    out.append(TargetStatus(t, tuple(recent), error, key or None))
            return tuple(out)


def _key(target: TargetConfig, model: str) -> str:
    """Whose history a result joins: its model's when the target names its models or
    probes all; else the target's one history ("")."""
    return model if target.models or target.all_models else ""
