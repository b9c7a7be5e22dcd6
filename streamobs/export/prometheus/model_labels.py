"""Model names as label values: bounded in length, in characters and in number per target.

A model name can come from the server (``/v1/models``, the response's ``model``), so a
hostile or broken server could otherwise make one label value a megabyte long, or name a
new model on every probe and grow a target to any number of series.

- ``model_label()``: characters outside a conservative set become ``_``; a name longer
  than ``MAX_LABEL_CHARS`` is cut and ends in a digest of the whole name, so two long
  names still get two labels.
- ``ModelLabels``: each target has at most ``max_models`` distinct model labels (configured
  ones count first). A probe naming one more is recorded under ``OVERFLOW`` (a value no
  real name can map to), so its outcome still counts for the target's availability and
  SLO, and ``streamobs_probe_model_labels_overflow_total{target}`` counts it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from streamobs.labels import MAX_LABEL_CHARS, OVERFLOW, model_label
from streamobs.targets import TargetConfig

log = logging.getLogger(__name__)

# One bound for every model name that becomes a label, the engines' own included.
__all__ = ["MAX_LABEL_CHARS", "OVERFLOW", "ModelLabels", "model_label"]


class ModelLabels:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._max = 1
        self._lock = threading.Lock()
        self._seen: dict[str, set[str]] = {}
        self._overflow = Counter(
            "streamobs_probe_model_labels_overflow",
            f"Probes whose model would have been a new model label past the per-target cap "
            f'(max_models_per_target); recorded under model="{OVERFLOW}".',
            ("target",),
            registry=registry,
        )

    def configure(self, targets: Iterable[TargetConfig], max_models: int) -> None:
        """Targets of a (re)loaded config: labels seen for a kept target stay its own,
        except that a target listing its models has those and no others."""
        targets = tuple(targets)
        names = {t.name for t in targets}
        with self._lock:
            self._max = max_models
            for gone in set(self._seen) - names:
                del self._seen[gone]
                self._overflow.remove(gone)
            for target in targets:
                if target.models:
                    self._seen[target.name] = {model_label(m.name) for m in target.models}
                self._seen.setdefault(target.name, set())
                self._overflow.labels(target.name)

    def retain(self, target: str, models: Iterable[str]) -> tuple[str, ...]:
        """``target`` now probes ``models`` (``model: all``): their labels (the first
        ``max_models``) are its own, and no others; returns them."""
        labels = tuple(dict.fromkeys(model_label(m) for m in models))[: self._max]
        with self._lock:
            if target in self._seen:
                self._seen[target] = set(labels)
        return labels

    def label(self, target: str, model: str) -> str:
        """The label value to record ``model`` under for ``target``."""
        label = model_label(model)
        with self._lock:
            seen = self._seen.setdefault(target, set())
            if label in seen:
                return label
            if len(seen) < self._max:
                seen.add(label)
                return label
            first = OVERFLOW not in seen
            seen.add(OVERFLOW)  # one value for all the excess, whatever the cap
        self._overflow.labels(target).inc()
        if first:
            log.warning(
                'target %s: more than %d distinct models; further ones are recorded as model="%s"',
                target,
                self._max,
                OVERFLOW,
            )
        return OVERFLOW
