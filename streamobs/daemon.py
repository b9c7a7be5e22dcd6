"""``streamobs run``: scheduled probes, /metrics, health, status page, /probe and reload.

Everything built from one config lives in a ``Runtime``; a reload builds a new one and
swaps it in, so a bad config never disturbs the running one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from streamobs.collectors.gpu.export import GpuCollector
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.collectors.health import CollectorHealth, Health, HealthSource
from streamobs.collectors.vllm.export import VllmCollector
from streamobs.collectors.vllm.poller import VllmPoller
from streamobs.collectors.vllm.scrape import VllmSnapshot
from streamobs.config import Config, ConfigError, Overrides, TargetConfig, load_config
from streamobs.efficiency import EfficiencyCollector, EfficiencyTracker, counter_sample
from streamobs.export.otlp.exporter import OtlpExporter
from streamobs.export.otlp.settings import OtlpSettingsError
from streamobs.export.prometheus.model_labels import ModelLabels, model_label
from streamobs.export.prometheus.probe import ProbeMetrics
from streamobs.ondemand import OnDemandProbes
from streamobs.overhead import OverheadTracker
from streamobs.probe.models import discover_model
from streamobs.probe.prober import run_probe
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.scheduler import Scheduler
from streamobs.status import StatusBoard
from streamobs.web.server import Reply, WebServer
from streamobs.web.status_page import render_status_page
from streamobs.web.webconfig import load_web_config

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

Probe = Callable[[ProbeSpec], ProbeResult]


class Runtime:
    """Registry, probe series, status board, scheduler and collectors for one config."""

    def __init__(self, config: Config, probe: Probe, discover: Callable[..., str]) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = ProbeMetrics(self.registry, config)
        self.model_labels = ModelLabels(self.registry, config.targets, config.max_models_per_target)
        self.status = StatusBoard(config)
        self.overhead = OverheadTracker()
        self.scheduler = Scheduler(
            config.targets, config.max_concurrency, self._on_result, probe, discover
        )
        health: list[HealthSource] = []
        self.vllm: VllmPoller | None = None
        if config.vllm.enabled:
            self.vllm = VllmPoller(config.targets, config.vllm, self._on_vllm_snapshot)
            # Normalised series here; vLLM's own families are appended as pre-rendered
            # text by render() when re-exposure is on.
            self.registry.register(
                VllmCollector(self.vllm.latest, targets=self.vllm.target_names, health=False)
            )
            self.registry.register(self.overhead)
            health.append(self._vllm_health)
        self.gpu: GpuSampler | None = None
        gpu = config.gpu
        if gpu.enabled:
            self.gpu = GpuSampler(
                interval=gpu.interval,
                deadline=gpu.deadline,
                backoff_max=gpu.backoff_max,
                served_model_match=gpu.served_model_match,
            )
            self.registry.register(GpuCollector(self.gpu.latest, health=False))
            health.append(self._gpu_health)
        self.efficiency = EfficiencyTracker(
            window_seconds=gpu.efficiency_window,
            price_per_gpu_hour=gpu.price_per_gpu_hour,
            gpu_count=gpu.gpu_count,
        )
        self.registry.register(EfficiencyCollector(self.efficiency.latest))
        self.registry.register(CollectorHealth(health))
        self._efficiency_target = _efficiency_target(config)
        # OTLP carries the same results and snapshots; it never measures on its own.
        try:
            self.otlp = OtlpExporter(config.otlp, config, self.registry)
        except OtlpSettingsError as exc:
            raise ConfigError(f"otlp: {exc}") from None
        if self.vllm is not None:
            self.otlp.observe_vllm(self.vllm.latest, self.vllm.target_names)
            self.otlp.observe_overhead(self.overhead)
        if self.gpu is not None:
            self.otlp.observe_gpu(self.gpu.latest)

    def render(self) -> bytes:
        """This runtime's series in the text exposition format."""
        text = generate_latest(self.registry)
        if self.vllm is not None and self.config.vllm.reexpose:
            text += self.vllm.reexposed_text()
        return text

    def _on_result(self, target: TargetConfig, result: ProbeResult) -> None:
        # Model names may come from the server: bounded before they become labels.
        response_model = result.response_model
        result = replace(
            result,
            model=self.model_labels.label(target.name, result.model),
            response_model=None if response_model is None else model_label(response_model),
        )
        self.metrics.record(target.name, result)
        self.status.record(target, result)
        self.overhead.record_probe(target, result)
        self.otlp.record_probe(target, result)

    def _on_vllm_snapshot(self, target: TargetConfig, snapshot: VllmSnapshot) -> None:
        self.overhead.record_snapshot(target, snapshot)
        if target.name == self._efficiency_target:
            gpu = self.gpu.latest() if self.gpu is not None else None
            self.efficiency.observe(counter_sample(snapshot, gpu, model=target.model))

    def _vllm_health(self) -> list[Health]:
        assert self.vllm is not None
        latest = self.vllm.latest()
        out = []
        for name in self.vllm.target_names:
            snapshot = latest.get(name)  # None: not scraped yet
            up = snapshot is not None and snapshot.up
            seconds = snapshot.duration_seconds if snapshot is not None else 0.0
            out.append(Health("vllm", name, up, seconds))
        return out

    def _gpu_health(self) -> list[Health]:
        assert self.gpu is not None
        snapshot = self.gpu.latest()
        return [Health("gpu", "", snapshot.up, snapshot.duration_seconds)]

    def start(self) -> None:
        self.scheduler.start()
        if self.vllm is not None:
            self.vllm.start()
        if self.gpu is not None:
            self.gpu.start()

    def stop(self, grace: float) -> bool:
        if self.vllm is not None:
            self.vllm.stop()
        if self.gpu is not None:
            self.gpu.stop()
        clean = self.scheduler.stop(grace)
        self.otlp.shutdown(min(grace, 5.0))
        return clean


def _efficiency_target(config: Config) -> str | None:
    """Tokens per joule only make sense for the vLLM on this box's GPUs: the first target
    whose metrics come from loopback, else the first with metrics at all."""
    scraped = [t for t in config.targets if t.metrics_url]
    local = [t for t in scraped if urlsplit(t.metrics_url or "").hostname in LOOPBACK_HOSTS]
    candidates = local or scraped
    return candidates[0].name if candidates else None


class ReloadGauges:
    """Outlive every runtime: they describe the swaps between them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._ok = Gauge(
            "streamobs_config_last_reload_successful",
            "1 if the last configuration reload succeeded.",
            registry=registry,
        )
        self._time = Gauge(
            "streamobs_config_last_reload_success_timestamp_seconds",
            "Wall-clock time of the last successful configuration load.",
            registry=registry,
        )

    def record(self, ok: bool) -> None:
        self._ok.set(1 if ok else 0)
        if ok:
            self._time.set(time.time())


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        probe: Probe = run_probe,
        discover: Callable[..., str] = discover_model,
        overrides: Overrides | None = None,
    ) -> None:
        self.config_path = config_path
        # Applied again to every reloaded file: flags keep winning over the file.
        self.overrides = overrides or Overrides()
        self._probe = probe
        self._discover = discover
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        # streamobs' own footprint, beside what it measures.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._reload = ReloadGauges(self.registry)
        # /probe has its own slots, apart from the scheduled probes' (see ondemand.py).
        self.on_demand = OnDemandProbes(probe, discover, self.registry, config.max_concurrency)
        self.runtime = Runtime(config, probe, discover)
        self._set_reload_state(True)
        self.web = WebServer(config.listen_address, self, load_web_config(config.web_config_file))
        self._stopped = threading.Event()
        self._started = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.web.start()
        self.runtime.start()
        self._started = True
        log.info(
            "listening on %s, probing %d target(s)", self.web.port, len(self.runtime.config.targets)
        )

    def stop(self) -> bool:
        """Stop probing (waiting up to the grace period) and close the listener."""
        grace = self.runtime.config.shutdown_grace
        clean = self.runtime.stop(grace)
        if not clean:
            log.warning("probes still running after %.1f s grace; exiting anyway", grace)
        self.web.stop()
        self._stopped.set()
        return clean

    def run_until_signalled(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stopped.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        self.start()
        self._stopped.wait()
        log.info("shutting down")
        self.stop()
        return 0

    # -- reload ---------------------------------------------------------------------
    def reload(self) -> tuple[bool, str]:
        with self._lock:
            if not self.config_path:
                return False, "no configuration file to reload"
            try:
                config = self.overrides.apply(load_config(self.config_path))
                if config.listen_address != self.runtime.config.listen_address:
                    raise ConfigError("web.listen_address cannot change on reload; restart")
                if config.web_config_file != self.runtime.config.web_config_file:
                    raise ConfigError("web.config_file cannot change on reload; restart")
                new = Runtime(config, self._probe, self._discover)
            except ConfigError as exc:
                self._set_reload_state(False)
                log.error("reload failed, keeping the running configuration: %s", exc)
                return False, str(exc)
            old = self.runtime
            self.runtime = new
            self.on_demand.resize(config.max_concurrency)
            if self._started:
                new.start()
            # The old probes finish in the background; their results go nowhere visible.
            threading.Thread(
                target=old.stop, args=(old.config.shutdown_grace,), daemon=True
            ).start()
            self._set_reload_state(True)
            log.info("configuration reloaded: %d target(s)", len(config.targets))
            return True, "reloaded"

    def _set_reload_state(self, ok: bool) -> None:
        self.last_reload_ok = ok
        self._reload.record(ok)

    # -- endpoints ------------------------------------------------------------------
    def metrics(self) -> Reply:
        # Always the classic text format: prometheus_client's OpenMetrics output rewrites the
        # colons in re-exposed vLLM names (vllm:x -> vllm_x), and every scraper reads text.
        # The daemon's own series and the current runtime's have no family in common.
        body = generate_latest(self.registry) + self.runtime.render()
        return Reply(200, body, CONTENT_TYPE_LATEST)

    def ready(self) -> Reply:
        if self._started and not self._stopped.is_set():
            return Reply(200, b"ready\n")
        return Reply(503, b"not ready\n")

    def status_page(self) -> Reply:
        html = render_status_page(self.runtime.status.snapshot(), self.last_reload_ok)
        return Reply(200, html.encode(), "text/html; charset=utf-8")

    def reload_endpoint(self) -> Reply:
        ok, message = self.reload()
        return Reply(200 if ok else 500, (message + "\n").encode())

    def probe(self, query: dict[str, list[str]], scrape_timeout: float | None) -> Reply:
        return self.on_demand.handle(self.runtime.config, query, scrape_timeout)
