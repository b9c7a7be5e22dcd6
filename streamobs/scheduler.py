"""Probe every target on its interval: never overlapping itself, bounded overall.

One thread per target keeps the schedule simple and makes "never overlapping itself" true
by construction; a semaphore bounds how many probes run at once across targets.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from streamobs.config import TargetConfig
from streamobs.probe.models import ModelDiscoveryError, discover_model
from streamobs.probe.prober import run_probe
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.report import redact_result
from streamobs.secret import redact

log = logging.getLogger(__name__)

# Model label (and request model) while /v1/models has not answered: the probe still runs,
# so an unreachable server is counted as a failed probe, not silently skipped.
UNKNOWN_MODEL = "unknown"

ResultCallback = Callable[[TargetConfig, ProbeResult], None]


def build_spec(target: TargetConfig, model: str) -> ProbeSpec:
    return ProbeSpec(
        target=target.target,
        model=model,
        prompt=target.prompt,
        max_tokens=target.max_tokens,
        ignore_eos=target.ignore_eos,
        timeouts=target.timeouts,
        api_key=target.api_key,
        headers=target.headers,
        accept_encoding=target.accept_encoding,
        verify_tls=target.verify_tls,
    )


class ModelResolver:
    """The configured model, or the one ``/v1/models`` names (asked again after a 404)."""

    def __init__(self, target: TargetConfig, discover: Callable[..., str] = discover_model) -> None:
        self._target = target
        self._discover = discover
        self._model = target.model
        self._logged_failure = False

    def model(self) -> str:
        if self._model:
            return self._model
        t = self._target
        try:
            self._model = self._discover(
                t.target, t.api_key, t.timeouts.connect + t.timeouts.headers, t.verify_tls
            )
            self._logged_failure = False
            log.info("target %s: serving model %s", t.name, self._model)
            return self._model
        except ModelDiscoveryError as exc:
            if not self._logged_failure:
                log.warning("target %s: %s", t.name, redact(str(exc), t.secrets(), 500))
                self._logged_failure = True
            return UNKNOWN_MODEL

    def after(self, result: ProbeResult) -> None:
        if self._target.model is None and result.http_status == 404:
            self._model = None  # redeployed with another model? ask again next time


class Scheduler:
    def __init__(
        self,
        targets: Sequence[TargetConfig],
        max_concurrency: int,
        on_result: ResultCallback,
        probe: Callable[[ProbeSpec], ProbeResult] = run_probe,
        discover: Callable[..., str] = discover_model,
        rng: random.Random | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._on_result = on_result
        self._probe = probe
        self._discover = discover
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in self._targets:
            thread = threading.Thread(
                target=self._loop, args=(target,), name=f"probe-{target.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, grace: float) -> bool:
        """No new probes; wait up to ``grace`` s for running ones. True if all finished."""
        self._stop.set()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _next_wait(self, target: TargetConfig) -> float:
        return target.interval + self._rng.uniform(-target.jitter, target.jitter)

    def _loop(self, target: TargetConfig) -> None:
        resolver = ModelResolver(target, self._discover)
        # Spread the first probes of many targets instead of firing them all at once.
        delay = self._rng.uniform(0, min(target.interval, 1.0)) * 0.1
        next_due = time.monotonic() + delay
        while not self._stop.wait(max(0.0, next_due - time.monotonic())):
            if not self._acquire_slot():
                return
            started = time.monotonic()
            try:
                result = self._probe(build_spec(target, resolver.model()))
            except Exception:
                # A bug must cost one probe, not this target's whole schedule.
                log.exception("target %s: the probe itself failed", target.name)
            else:
                resolver.after(result)
                # Server text in the result is redacted once, before anything shows it.
                self._deliver(target, redact_result(result, target.secrets()))
            finally:
                self._slots.release()
            # Fixed rate from the start of the probe; a probe longer than the interval
            # delays the next one rather than overlapping it.
            next_due = max(started + self._next_wait(target), time.monotonic())

    def _acquire_slot(self) -> bool:
        while not self._slots.acquire(timeout=0.2):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            self._slots.release()
            return False
        return True

    def _deliver(self, target: TargetConfig, result: ProbeResult) -> None:
        try:
            self._on_result(target, result)
        except Exception:
            # A broken exporter must not stop the probing of this target.
            log.exception("target %s: recording a probe result failed", target.name)
        if result.outcome is not Outcome.OK:
            log.info("target %s: probe %s: %s", target.name, result.outcome.value, result.error)
