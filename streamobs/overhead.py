"""Client TTFT minus the server's own TTFT over the same window: the network/proxy share.

Each vLLM scrape closes a window: the server's mean TTFT in it is the growth of its TTFT
histogram's sum over the growth of its count, the client's is the mean TTFT of the
successful probes that finished in it. PromQL gives the same from the raw series:

    rate(streamobs_probe_ttft_seconds_sum[5m]) / rate(streamobs_probe_ttft_seconds_count[5m])
  - on(target) sum by (target) (rate(streamobs_engine_time_to_first_token_seconds_sum[5m]))
    / sum by (target) (rate(streamobs_engine_time_to_first_token_seconds_count[5m]))
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from streamobs.collectors.engines.scrape import EngineSnapshot, server_view
from streamobs.probe.result import ProbeResult
from streamobs.targets import TargetConfig

METRIC = "streamobs_probe_ttft_overhead_seconds"


@dataclass
class _Window:
    client_sum: float = 0.0
    client_count: int = 0
    model: str | None = None
    server_sum: float | None = None  # cumulative values at the window's start
    server_count: float | None = None


class OverheadTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._latest: dict[tuple[str, str], float] = {}

    def record_probe(self, target: TargetConfig, result: ProbeResult) -> None:
        if not result.ok or not result.exact or result.first_token_ns is None:
            return
        with self._lock:
            window = self._windows.setdefault(target.name, _Window())
            window.client_sum += result.first_token_ns / 1e9
            window.client_count += 1
            window.model = result.model

    def keep(self, targets: Iterable[str]) -> None:
        """Forget every target but ``targets`` (after a reload)."""
        kept = set(targets)
        with self._lock:
            self._windows = {k: v for k, v in self._windows.items() if k in kept}
            self._latest = {k: v for k, v in self._latest.items() if k[0] in kept}

    def record_snapshot(self, target: str, snapshot: EngineSnapshot) -> None:
        if not snapshot.up:
            return
        with self._lock:
            window = self._windows.setdefault(target, _Window())
            ttft = server_view(snapshot, window.model).time_to_first_token
            if ttft is None and window.model is not None:
                ttft = server_view(snapshot).time_to_first_token  # model named differently
            if ttft is None:
                return
            start_sum, start_count = window.server_sum, window.server_count
            window.server_sum, window.server_count = ttft.sum, ttft.count
            if start_sum is None or start_count is None:
                window.client_sum, window.client_count = 0.0, 0
                return  # the first snapshot only opens a window
            served = ttft.count - start_count
            if served <= 0 or window.client_count == 0:
                if served < 0:  # server restarted: its counters began again
                    window.client_sum, window.client_count = 0.0, 0
                return
            server_mean = (ttft.sum - start_sum) / served
            client_mean = window.client_sum / window.client_count
            self._latest[(target, window.model or "")] = client_mean - server_mean
            window.client_sum, window.client_count = 0.0, 0

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            METRIC,
            "Approximation: mean client TTFT of successful probes minus vLLM's mean TTFT "
            "over a scrape window, other users' requests included; "
            "streamobs_probe_path_seconds is the per-probe figure (traces_receiver).",
            labels=("target", "model"),
        )
        with self._lock:
            for (target, model), value in sorted(self._latest.items()):
                family.add_metric((target, model), value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(METRIC, "", labels=("target", "model"))]
