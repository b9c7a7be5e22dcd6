"""Scrape every target's vLLM ``/metrics`` in the background, keeping the latest snapshot.

Off the scrape path on purpose: a slow vLLM must not slow our own ``/metrics``, and the
scrape interval of whoever reads us must not change how often we load vLLM.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest

from streamobs.collectors.vllm.export import VllmCollector
from streamobs.collectors.vllm.scrape import VllmSnapshot, scrape_vllm
from streamobs.config import TargetConfig, VllmCollectorConfig

log = logging.getLogger(__name__)

SnapshotCallback = Callable[[TargetConfig, VllmSnapshot], None]


class VllmPoller:
    def __init__(
        self,
        targets: Sequence[TargetConfig],
        config: VllmCollectorConfig,
        on_snapshot: SnapshotCallback | None = None,
    ) -> None:
        self._targets = tuple(t for t in targets if t.metrics_url)
        self._config = config
        self._on_snapshot = on_snapshot
        self._latest: dict[str, VllmSnapshot] = {}
        self._lock = threading.Lock()
        self._reexposed: bytes | None = None  # rendered once per new snapshot, not per scrape
        # One collector for the whole life of the poller: it logs target states once per
        # change, which a collector made per render would repeat on every new snapshot.
        self._reexposing = CollectorRegistry(auto_describe=False)
        self._reexposing.register(
            VllmCollector(
                self.latest,
                targets=self.target_names,
                reexpose=True,
                # Only vLLM's own families: its process_*/python_* would collide with ours.
                reexpose_prefixes=("vllm:",),
                health=False,
                normalise=False,
            )
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._targets)

    def latest(self) -> Mapping[str, VllmSnapshot]:
        with self._lock:
            return dict(self._latest)

    def reexposed_text(self) -> bytes:
        """vLLM's own families in the text format, exactly as vLLM serves them (with a
        ``target`` label when there are several targets). Formatting thousands of vLLM
        samples on every scrape of ours would dominate its cost; the text only changes
        when a new snapshot arrives, so it is rendered then, at most once."""
        with self._lock:
            cached = self._reexposed
        if cached is not None:
            return cached
        text = generate_latest(self._reexposing)
        with self._lock:
            self._reexposed = text
        return text

    def start(self) -> None:
        for target in self._targets:
            thread = threading.Thread(
                target=self._loop, args=(target,), name=f"vllm-{target.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def scrape_once(self, target: TargetConfig) -> VllmSnapshot:
        assert target.metrics_url is not None
        snapshot = scrape_vllm(
            target.metrics_url,
            timeout=min(self._config.timeout, target.interval),
            max_bytes=self._config.max_bytes,
        )
        self.accept(target, snapshot)
        return snapshot

    def accept(self, target: TargetConfig, snapshot: VllmSnapshot) -> None:
        """Make ``snapshot`` the latest of ``target`` and tell whoever listens."""
        with self._lock:
            self._latest[target.name] = snapshot
            self._reexposed = None
        if self._on_snapshot is not None:
            try:
                self._on_snapshot(target, snapshot)
            except Exception:
                log.exception("target %s: handling a vLLM snapshot failed", target.name)

    def _loop(self, target: TargetConfig) -> None:
        # Same cadence as the target's probes, offset so both do not always coincide.
        wait = random.uniform(0, min(target.interval, 1.0))
        while not self._stop.wait(wait):
            self.scrape_once(target)
            wait = target.interval
