"""Probe every target on its interval: never overlapping itself, bounded overall.

One thread per target keeps the schedule simple and makes "never overlapping itself" true
by construction; shared slots bound how many probes run at once across targets. A reload
updates the schedule in place, so unchanged targets are never interrupted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from streamobs.probe.models import ModelDiscoveryError, discover_model
from streamobs.probe.prober import run_probe
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.report import redact_result
from streamobs.secret import redact
from streamobs.statelog import StateLog
from streamobs.targets import UNKNOWN_MODEL, TargetConfig

log = logging.getLogger(__name__)


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
        self._states = StateLog(log)

    def model(self) -> str:
        if self._model:
            return self._model
        t = self._target
        try:
            self._model = self._discover(
                t.target, t.api_key, t.timeouts.connect + t.timeouts.headers, t.verify_tls
            )
            self._states.changed("discovery", "")
            log.info("target %s: serving model %s", t.name, self._model)
            return self._model
        except ModelDiscoveryError as exc:
            if self._states.changed("discovery", "failing"):
                log.warning("target %s: %s", t.name, redact(str(exc), t.secrets(), 500))
            return UNKNOWN_MODEL

    def after(self, result: ProbeResult) -> None:
        if self._target.model is None and result.http_status == 404:
            self._model = None  # redeployed with another model? ask again next time


class Slots:
    """At most ``size`` probes at once; the size can change while probes run."""

    def __init__(self, size: int) -> None:
        self._cond = threading.Condition()
        self._size = size
        self._used = 0

    def resize(self, size: int) -> None:
        with self._cond:
            self._size = size
            self._cond.notify_all()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for a slot; False (no slot taken) once ``stop`` is set."""
        with self._cond:
            while self._used >= self._size:
                if stop.is_set():
                    return False
                self._cond.wait(0.2)
            if stop.is_set():
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify()


class _Loop:
    """One target's schedule on its own thread, stopped on its own."""

    def __init__(self, target: TargetConfig, run: Callable[[TargetConfig, threading.Event], None]):
        self.target = target
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run, args=(target, self.stop), name=f"probe-{target.name}", daemon=True
        )


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
        self._slots = Slots(max_concurrency)
        self._on_result = on_result
        self._probe = probe
        self._discover = discover
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._loops: dict[str, _Loop] = {}
        self._retired: list[_Loop] = []  # stopped, maybe still finishing a probe
        self._states = StateLog(log)
        self._started = False

    def start(self) -> None:
        with self._lock:
            self._started = True
            for target in self._targets:
                self._begin(target)

    def update(self, targets: Sequence[TargetConfig], max_concurrency: int) -> None:
        """Take a reloaded target list: an unchanged target keeps its schedule (and its
        probe in flight), a changed one starts over, a removed one stops."""
        self._slots.resize(max_concurrency)
        with self._lock:
            self._targets = tuple(targets)
            wanted = {t.name: t for t in targets}
            for name, loop in list(self._loops.items()):
                if wanted.get(name) != loop.target:
                    loop.stop.set()
                    self._retired.append(self._loops.pop(name))
            self._retired = [loop for loop in self._retired if loop.thread.is_alive()]
            if self._started:
                for target in targets:
                    if target.name not in self._loops:
                        self._begin(target)

    def _begin(self, target: TargetConfig) -> None:
        loop = _Loop(target, self._loop)
        self._loops[target.name] = loop
        loop.thread.start()

    def stop(self, grace: float) -> bool:
        """No new probes; wait up to ``grace`` s for running ones. True if all finished."""
        with self._lock:
            loops = [*self._loops.values(), *self._retired]
        for loop in loops:
            loop.stop.set()
        deadline = time.monotonic() + grace
        for loop in loops:
            loop.thread.join(max(0.0, deadline - time.monotonic()))
        return not any(loop.thread.is_alive() for loop in loops)

    def _next_wait(self, target: TargetConfig) -> float:
        return target.interval + self._rng.uniform(-target.jitter, target.jitter)

    def _loop(self, target: TargetConfig, stop: threading.Event) -> None:
        resolver = ModelResolver(target, self._discover)
        # Spread the first probes of many targets instead of firing them all at once.
        delay = self._rng.uniform(0, min(target.interval, 1.0)) * 0.1
        next_due = time.monotonic() + delay
        while not stop.wait(max(0.0, next_due - time.monotonic())):
            if not self._slots.acquire(stop):
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
                if not stop.is_set():  # a removed target's last probe counts nowhere
                    self._deliver(target, redact_result(result, target.secrets()))
            finally:
                self._slots.release()
            # Fixed rate from the start of the probe; a probe longer than the interval
            # delays the next one rather than overlapping it.
            next_due = max(started + self._next_wait(target), time.monotonic())

    def _deliver(self, target: TargetConfig, result: ProbeResult) -> None:
        try:
            self._on_result(target, result)
        except Exception:
            # A broken exporter must not stop the probing of this target.
            log.exception("target %s: recording a probe result failed", target.name)
        # A line when a target starts failing (or fails differently) and when it recovers;
        # every probe's outcome is on /metrics and, at debug level, here.
        self._states.report(
            target.name,
            None if result.outcome is Outcome.OK else result.outcome.value,
            f"target {target.name}: probes failing",
            f"target {target.name}: probes succeed again",
        )
        if result.outcome is not Outcome.OK:
            log.debug("target %s: probe %s: %s", target.name, result.outcome.value, result.error)
