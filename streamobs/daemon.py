"""``streamobs run``: scheduled probes, /metrics, health, status page, /probe and reload.

One ``Runtime`` and one registry live as long as the process. A reload parses the new
config apart (a bad one never disturbs the running one) and then hands it to
``Runtime.configure()``: unchanged targets keep their series, schedule and history, removed
targets' series go, and collectors are updated in place or rebuilt when they cannot be.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)

from streamobs import __version__
from streamobs.collectors.engines.poller import EnginePoller, ScrapeTarget
from streamobs.collectors.engines.scrape import EngineSnapshot
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.collectors.guard import Collector, GuardedCollectors
from streamobs.collectors.registry import COLLECTORS, ENGINE_KIND_COLLECTORS, CollectorContext
from streamobs.config import Config, ConfigError, Overrides, load_config, running_in_kubernetes
from streamobs.efficiency import EfficiencyCollector, EfficiencyTracker, counter_sample
from streamobs.export.otlp.exporter import OtlpExporter, enabled_signals
from streamobs.export.otlp.health import OtlpSelfMetrics
from streamobs.export.otlp.settings import (
    OtlpSettingsError,
    export_enabled,
    protocol_for,
    signal_enabled,
)
from streamobs.export.prometheus.model_labels import ModelLabels, model_label
from streamobs.export.prometheus.probe import ProbeMetrics
from streamobs.export.prometheus.server_timing import ServerTimingMetrics, TracesCollector
from streamobs.export.prometheus.target_info import TargetInfo
from streamobs.export.prometheus.text import render_registry
from streamobs.ondemand import OnDemandProbes
from streamobs.overhead import OverheadTracker
from streamobs.probe.models import discover_model
from streamobs.probe.prober import run_probe
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.scheduler import Scheduler
from streamobs.status import StatusBoard
from streamobs.targets import TargetConfig
from streamobs.traces.forward import Destination, resolve_destination
from streamobs.traces.records import ServerSpan, server_timing
from streamobs.traces.service import TracesService
from streamobs.web.server import Reply, WebServer
from streamobs.web.status_page import render_status_page
from streamobs.web.webconfig import load_web_config

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

Probe = Callable[[ProbeSpec], ProbeResult]


def scrape_targets(config: Config) -> tuple[ScrapeTarget, ...]:
    """Each engine once, however many targets reach it."""
    return tuple(
        ScrapeTarget(e.name, e.metrics_url, e.interval, None if e.kind == "auto" else e.kind)
        for e in config.engines
    )


class Runtime:
    """Registry, probe series, status board, scheduler and collectors: built once, then
    reconfigured by every (re)loaded config."""

    def __init__(
        self,
        config: Config,
        probe: Probe,
        discover: Callable[..., str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._probe = probe
        self._discover = discover
        self._lock = threading.Lock()
        self.metrics = ProbeMetrics(self.registry)
        self.model_labels = ModelLabels(self.registry)
        self.target_info = TargetInfo(self.registry)
        self.status = StatusBoard()
        self.overhead = OverheadTracker()
        self.collectors = GuardedCollectors()
        self.registry.register(self.collectors)
        self.registry.register(self.overhead)
        # Each probe's own server span (off unless traces_receiver has an address).
        self.traces = _traces_service(config)
        self.server_timing: ServerTimingMetrics | None = None
        if self.traces is not None:
            self.server_timing = ServerTimingMetrics(self.registry, config.latency_buckets())
            self.registry.register(TracesCollector(self.traces.stats))
        self.efficiency = _efficiency_tracker(config)
        self.registry.register(EfficiencyCollector(lambda: self.efficiency.latest()))
        self._running: dict[str, Collector] = {}
        # Every engine, whatever its kind, scraped by one poller; each kind's collector
        # is a view of it, and the view of engines of unknown kind runs beside them.
        self._engines = EnginePoller((), config.engine_scrape, self._on_engine_snapshot)
        self._unresolved = self._engines.view(None)
        self._otlp_metrics: OtlpSelfMetrics | None = None
        self._otlp_key: object = None
        self._targets: dict[str, TargetConfig] = {}
        self._efficiency_engine: str | None = None
        self._started = False
        self.scheduler = Scheduler(
            (),
            config.max_concurrency,
            self._on_result,
            probe,
            discover,
            max_models=config.max_models_per_target,
            on_models=self._on_models,
        )
        self.config = config
        self.otlp: OtlpExporter | None = None
        self.configure(config, self.prepare(config))  # a bad OTLP setting raises here

    # -- configuration ---------------------------------------------------------------
    def prepare(self, config: Config) -> OtlpExporter:
        """The part of a reload that can fail, done before anything changes: the OTLP
        exporter the new config needs (the running one when its settings are unchanged)."""
        return self._otlp_for(config)

    def configure(self, config: Config, otlp: OtlpExporter) -> None:
        """Take a (re)loaded config (``otlp`` from ``prepare``): nothing here can fail."""
        with self._lock:
            targets = config.targets
            self._targets = {t.name: t for t in targets}
            self.metrics.configure(targets, config.latency_buckets())
            self.model_labels.configure(targets, config.max_models_per_target)
            self.target_info.configure(targets)
            self.status.configure(targets)
            self.overhead.keep(self._targets)
            if self.server_timing is not None:
                self.server_timing.keep(self._targets)
            if _efficiency_settings(config) != _efficiency_settings(self.config):
                self.efficiency = _efficiency_tracker(config)
            self._efficiency_engine = _efficiency_engine(config)
            self.config = config
            self._configure_collectors(config)
            old_otlp, self.otlp = self.otlp, otlp
            if otlp is not old_otlp:
                self._observe(otlp)
                if old_otlp is not None:
                    threading.Thread(target=old_otlp.shutdown, args=(5.0,), daemon=True).start()
            self.scheduler.update(targets, config.max_concurrency, config.max_models_per_target)

    def _otlp_for(self, config: Config) -> OtlpExporter:
        buckets = config.latency_buckets()
        # Its SLO gauges, histogram views and observed sources are fixed when it is built.
        key = (
            config.otlp,
            config.targets,
            tuple(sorted(buckets.items())),
            tuple(collector_enabled(config, entry.name) for entry in COLLECTORS),
        )
        if self.otlp is not None and key == self._otlp_key:
            return self.otlp
        signals = enabled_signals(config.otlp) if _otlp_valid(config) else []
        if signals and self._otlp_metrics is None:
            # Counted across exporters: one set for the life of the process.
            self._otlp_metrics = OtlpSelfMetrics(self.registry, signals)
        try:
            exporter = OtlpExporter(
                config.otlp, config.targets, buckets, self_metrics=self._otlp_metrics
            )
        except OtlpSettingsError as exc:
            raise ConfigError(f"otlp: {exc}") from None
        self._otlp_key = key
        return exporter

    def _observe(self, otlp: OtlpExporter) -> None:
        # OTLP carries the same results and snapshots; it never measures on its own.
        engines = self.engines
        if engines is not None:
            otlp.observe_vllm(engines.latest, engines.configured_kinds())
            otlp.observe_overhead(self.overhead)
        gpu = self.gpu
        if gpu is not None:
            otlp.observe_gpu(gpu.latest)

    def _configure_collectors(self, config: Config) -> None:
        self._engines.update(scrape_targets(config), config.engine_scrape)
        context = CollectorContext(self._engines, config.gpu)
        for entry in COLLECTORS:
            enabled = collector_enabled(config, entry.name)
            running = self._running.get(entry.name)
            if running is not None and (not enabled or not entry.update(running, context)):
                del self._running[entry.name]
                threading.Thread(target=running.stop, args=(5.0,), daemon=True).start()
                running = None
            if enabled and running is None:
                running = entry.build(context)
                self._running[entry.name] = running
                if self._started:
                    running.start()
        running_now = [self._running[e.name] for e in COLLECTORS if e.name in self._running]
        engines_on = config.engine_scrape.enabled
        if engines_on and self._started:
            self._unresolved.start()
        elif not engines_on:
            self._unresolved.stop(0.0)
        self.collectors.set([*running_now, self._unresolved] if engines_on else running_now)

    @property
    def engines(self) -> EnginePoller | None:
        """The poller of every engine, while any engine kind's collector is on."""
        return self._engines if self.config.engine_scrape.enabled else None

    @property
    def gpu(self) -> GpuSampler | None:
        running = self._running.get("gpu")
        return running if isinstance(running, GpuSampler) else None

    def collector_states(self) -> dict[str, bool]:
        return {entry.name: entry.name in self._running for entry in COLLECTORS}

    # -- results ---------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry's series in the text exposition format, the engines' own after."""
        engines = self.engines
        # Re-exposed text first: a failure to render it is reported by the guard below.
        reexposed = engines.reexposed_text() if engines is not None else b""
        return render_registry(self.registry, after=reexposed)

    def _on_result(self, target: TargetConfig, result: ProbeResult) -> None:
        if self._targets.get(target.name) != target:
            return  # finished after its target left or changed in the config
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
        if self.otlp is not None:
            self.otlp.record_probe(target, result)
        if self.traces is not None and result.trace_id is not None:
            self.traces.expect(
                result.trace_id, lambda span: self._on_server_span(target, result, span)
            )

    def _on_models(self, target: TargetConfig, models: tuple[str, ...]) -> None:
        """``model: all`` lists other models now: those it no longer lists lose their
        series and history, as a removed target does (so adapters that come and go never
        fill the model label cap)."""
        if self._targets.get(target.name) != target:
            return
        labels = self.model_labels.retain(target.name, models)
        self.metrics.forget_models(target.name, labels)
        self.status.forget_models(target.name, labels)
        if self.server_timing is not None:
            self.server_timing.forget_models(target.name, labels)

    def _on_server_span(
        self, target: TargetConfig, result: ProbeResult, span: ServerSpan | None
    ) -> None:
        # On the receiver's thread, once the probe's own span came (None: it did not).
        timing = self.server_timing
        if span is None or timing is None or self._targets.get(target.name) != target:
            return
        joined = server_timing(result.first_token_ns, span)
        timing.record(target.name, result, joined)
        otlp = self.otlp
        if otlp is not None:
            otlp.record_server_timing(target, result, joined)

    def _on_engine_snapshot(self, engine: str, snapshot: EngineSnapshot) -> None:
        for target in self._targets.values():
            if target.engine == engine:
                self.overhead.record_snapshot(target.name, snapshot)
        if engine == self._efficiency_engine:
            gpu = self.gpu
            self.efficiency.observe(
                counter_sample(snapshot, gpu.latest() if gpu is not None else None, model=None)
            )

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._started = True
            if self.traces is not None:
                self.traces.start()  # before the first probe, so no span is missed
            self.scheduler.start()
            for collector in self._running.values():
                collector.start()
            if self.config.engine_scrape.enabled:
                self._unresolved.start()

    def stop(self, grace: float) -> bool:
        """Everything stops at once, in parallel, within ``grace`` seconds in total."""
        deadline = time.monotonic() + grace
        clean = [True]

        def scheduler() -> None:
            clean[0] = self.scheduler.stop(grace)

        stops: list[Callable[[], object]] = [
            scheduler,
            *(lambda c=c: c.stop(grace) for c in self._running.values()),
            lambda: self._engines.stop(grace),
        ]
        otlp = self.otlp
        if otlp is not None:
            stops.append(lambda: otlp.shutdown(min(grace, 5.0)))
        traces = self.traces
        if traces is not None:
            stops.append(lambda: traces.stop(min(grace, 2.0)))
        threads = [threading.Thread(target=fn, daemon=True) for fn in stops]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return clean[0] and not any(thread.is_alive() for thread in threads)


def collector_enabled(config: Config, name: str) -> bool:
    if name in ENGINE_KIND_COLLECTORS:
        return name in config.engine_scrape.kinds
    settings = getattr(config, name)
    return bool(settings.enabled)


def _traces_service(config: Config) -> TracesService | None:
    """The trace receiver the config asks for, forwarding to where streamobs' own OTLP
    spans go (taken at start) when that export is on."""
    settings = config.traces_receiver
    if not settings.enabled:
        return None
    destination: Destination | None = None
    otlp = config.otlp
    try:
        if export_enabled(otlp) and signal_enabled(otlp, "traces"):
            destination = resolve_destination(
                protocol_for(otlp, "traces"), otlp.endpoint, otlp.headers, otlp.timeout
            )
    except OtlpSettingsError:
        destination = None  # the exporter itself reports the bad setting
    service = TracesService(settings, destination)
    try:
        service.bind()  # a port taken is a refusal to start, before anything runs
    except (OSError, ValueError) as exc:
        where = " and ".join(a for a in (settings.http_address, settings.grpc_address) if a)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"traces_receiver: cannot listen on {where}: {reason}") from None
    return service


def _otlp_valid(config: Config) -> bool:
    try:
        enabled_signals(config.otlp)
    except OtlpSettingsError:
        return False
    return True


def _efficiency_settings(config: Config) -> tuple[object, ...]:
    gpu = config.gpu
    return (gpu.efficiency_window, gpu.price_per_gpu_hour, gpu.gpu_count)


def _efficiency_tracker(config: Config) -> EfficiencyTracker:
    gpu = config.gpu
    return EfficiencyTracker(
        window_seconds=gpu.efficiency_window,
        price_per_gpu_hour=gpu.price_per_gpu_hour,
        gpu_count=gpu.gpu_count,
    )


def _efficiency_engine(config: Config) -> str | None:
    """Tokens per joule only make sense for the engine on this box's GPUs: the first engine
    whose metrics come from loopback, else the first at all."""
    local = [e for e in config.engines if urlsplit(e.metrics_url).hostname in LOOPBACK_HOSTS]
    candidates = local or list(config.engines)
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
        self._lock = threading.Lock()
        # The one registry, for the life of the process.
        self.registry = CollectorRegistry(auto_describe=True)
        # streamobs' own footprint, beside what it measures.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._reload = ReloadGauges(self.registry)
        # /probe has its own slots, apart from the scheduled probes' (see ondemand.py).
        self.on_demand = OnDemandProbes(probe, discover, self.registry, config.max_concurrency)
        self.runtime = Runtime(config, probe, discover, self.registry)
        self._set_reload_state(True)
        self.web_config = load_web_config(config.web_config_file)
        self.web = WebServer(config.listen_address, self, self.web_config)
        self._stopped = threading.Event()
        self._started = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.web.start()
        self.runtime.start()
        self._started = True
        log.info("%s", self.start_line())

    def start_line(self) -> str:
        """What an operator checks first: version, where it listens, what it watches."""
        config = self.runtime.config
        host = config.listen_address.rsplit(":", 1)[0]
        scheme = "https" if self.web_config.tls is not None else "http"
        auth = "basic auth on" if self.web_config.auth is not None else "no auth"
        states = self.runtime.collector_states()
        on = [name for name, state in states.items() if state]
        off = [
            f"{name} off ({self._off_reason(name)})" for name, state in states.items() if not state
        ]
        collectors = ", ".join([*([f"{', '.join(on)} on"] if on else []), *off])
        return (
            f"streamobs {__version__} listening on {scheme}://{host}:{self.web.port} ({auth}); "
            f"probing {len(config.targets)} target(s): {_names(config.targets)}; "
            f"collectors: {collectors}"
        )

    def _off_reason(self, name: str) -> str:
        if self.overrides.collectors.get(name) is False:
            return f"--no-collector.{name}"
        if name == "gpu" and running_in_kubernetes():
            return "off by default in Kubernetes; --collector.gpu turns it on"
        if name in ENGINE_KIND_COLLECTORS:
            return f"collectors.{name}.enabled or collectors.engines.enabled is false"
        return f"collectors.{name}.enabled is false"

    def stop(self) -> bool:
        """Stop probing and collecting (all at once, within the grace period) and close
        the listener."""
        grace = self.runtime.config.shutdown_grace
        clean = self.runtime.stop(grace)
        if not clean:
            log.warning("probes still running after %.1f s grace; exiting anyway", grace)
        self.web.stop()
        self._stopped.set()
        return clean

    def run_until_signalled(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads; a second SIGTERM/SIGINT during the
        shutdown exits at once. Returns the exit code."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self._stopped.is_set():
                log.warning("second signal: exiting now")
                os._exit(128 + signum)
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
                if config.traces_receiver != self.runtime.config.traces_receiver:
                    raise ConfigError("traces_receiver cannot change on reload; restart")
                otlp = self.runtime.prepare(config)
            except ConfigError as exc:
                self._set_reload_state(False)
                log.error("reload failed, keeping the running configuration: %s", exc)
                return False, str(exc)
            self.runtime.configure(config, otlp)
            self.on_demand.resize(config.max_concurrency)
            self._set_reload_state(True)
            log.info(
                "configuration reloaded: %d target(s): %s",
                len(config.targets),
                _names(config.targets),
            )
            return True, "reloaded"

    def _set_reload_state(self, ok: bool) -> None:
        self.last_reload_ok = ok
        self._reload.record(ok)

    # -- endpoints ------------------------------------------------------------------
    def metrics(self) -> Reply:
        # Always the classic text format: prometheus_client's OpenMetrics output rewrites the
        # colons in re-exposed vLLM names (vllm:x -> vllm_x), and every scraper reads text.
        body = self.runtime.render()
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


def _names(targets: Sequence[TargetConfig], most: int = 10) -> str:
    shown = ", ".join(t.name for t in targets[:most])
    return shown + (f" and {len(targets) - most} more" if len(targets) > most else "")
