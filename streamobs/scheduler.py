"""Probe every target on its interval: never overlapping itself, bounded overall.

A timer queue and a pool of at most ``max_concurrency`` workers, not a thread per target:
a thousand targets cost a heap of a thousand entries and a handful of threads. One timer
thread moves each target to the ready queue when it is due; idle workers take the target
that has been due longest, so when probes run long every target still gets its turn in
order instead of a few winning every race for a slot. A target is back in the timer queue
only once its probe has ended, so it never overlaps itself. A reload updates the schedule
in place: unchanged targets keep their next due time and their probe in flight.
"""

from __future__ import annotations

import heapq
import itertools
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
        tool_call=target.tool_call,
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


class _Entry:
    """One target's place in the schedule. Replaced (never edited) when the target
    changes; ``cancelled`` tells a queue holding it, or the worker probing it, that it left."""

    __slots__ = ("cancelled", "due", "resolver", "retiring", "running", "target")

    def __init__(self, target: TargetConfig, resolver: ModelResolver, due: float) -> None:
        self.target = target
        self.resolver = resolver
        self.due = due
        self.running = False
        self.cancelled = False
        self.retiring = False  # cancelled while its probe ran: its worker is spare


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
        self._size = max_concurrency
        self._on_result = on_result
        self._probe = probe
        self._discover = discover
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._timer_wake = threading.Condition(self._lock)  # the timer: an earlier due time
        self._work_ready = threading.Condition(self._lock)  # workers: a target is ready
        self._entries: dict[str, _Entry] = {}
        self._timers: list[tuple[float, int, _Entry]] = []  # (due, seq, entry)
        self._ready: list[tuple[float, int, _Entry]] = []  # due longest ago first
        self._seq = itertools.count()
        self._workers: set[threading.Thread] = set()
        self._idle = 0
        self._retiring = 0  # workers still finishing the probe of a cancelled target
        self._timer: threading.Thread | None = None
        self._states = StateLog(log)
        self._started = False
        self._stopping = False

    # -- schedule ----------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for target in self._targets:
                self._add(target)
            self._fill()
            self._timer = threading.Thread(target=self._run_timer, name="probe-timer", daemon=True)
            self._timer.start()

    def update(self, targets: Sequence[TargetConfig], max_concurrency: int) -> None:
        """Take a reloaded target list: an unchanged target keeps its schedule (and its
        probe in flight), a changed one starts over, a removed one stops."""
        with self._lock:
            self._targets = tuple(targets)
            self._size = max_concurrency
            wanted = {t.name: t for t in targets}
            for name, entry in list(self._entries.items()):
                if wanted.get(name) != entry.target:
                    entry.cancelled = True  # lazily dropped from the queues
                    del self._entries[name]
                    if entry.running:
                        entry.retiring = True
                        self._retiring += 1
            if self._started:
                for target in targets:
                    if target.name not in self._entries:
                        self._add(target)
                self._fill()
            self._work_ready.notify_all()  # surplus idle workers leave when it shrank

    def stats(self) -> dict[str, int]:
        """Threads and queue lengths, for tests and benchmarks."""
        with self._lock:
            return {
                "workers": len(self._workers),
                "idle": self._idle,
                "ready": len(self._ready),
                "waiting": len(self._timers),
                "running": sum(1 for e in self._entries.values() if e.running),
            }

    def stop(self, grace: float) -> bool:
        """No new probes; wait up to ``grace`` s for running ones. True if all finished."""
        with self._lock:
            self._stopping = True
            threads = [*self._workers, *([self._timer] if self._timer else [])]
            self._timer_wake.notify_all()
            self._work_ready.notify_all()
        deadline = time.monotonic() + grace
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def _add(self, target: TargetConfig) -> None:
        # Spread the first probes of many targets instead of firing them all at once.
        delay = self._rng.uniform(0, min(target.interval, 1.0)) * 0.1
        entry = _Entry(target, ModelResolver(target, self._discover), time.monotonic() + delay)
        self._entries[target.name] = entry
        self._push_timer(entry)

    def _push_timer(self, entry: _Entry) -> None:
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (entry.due, next(self._seq), entry))
        if earliest is None or entry.due < earliest:
            self._timer_wake.notify()

    def _next_wait(self, target: TargetConfig) -> float:
        return target.interval + self._rng.uniform(-target.jitter, target.jitter)

    # -- threads -----------------------------------------------------------------------
    def _run_timer(self) -> None:
        """Move due targets to the ready queue, waking a worker for each."""
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due, seq, entry = heapq.heappop(self._timers)
                    if entry.cancelled:
                        continue
                    heapq.heappush(self._ready, (due, seq, entry))
                    self._work_ready.notify()
                wait = self._timers[0][0] - now if self._timers else None
                self._timer_wake.wait(wait)

    def _pool_size(self) -> int:
        """As many workers as probes may run at once, and no more than there are targets."""
        return 0 if self._stopping else min(self._size, len(self._entries))

    def _fill(self) -> None:
        # Workers finishing a removed target's probe do not count: the targets left get
        # their share at once, as long as no more than max_concurrency run in all.
        while (
            len(self._workers) - self._retiring < self._pool_size()
            and len(self._workers) < self._size
        ):
            worker = threading.Thread(target=self._run_worker, name="probe-worker", daemon=True)
            self._workers.add(worker)
            worker.start()

    def _run_worker(self) -> None:
        me = threading.current_thread()
        with self._lock:
            try:
                while True:
                    entry = self._take()
                    if entry is None:
                        return
                    self._lock.release()
                    try:
                        result = self._probe_once(entry)
                        # A removed target's last probe, or one ending after stop, counts
                        # nowhere (the daemon checks again, under its own lock).
                        if result is not None and not (entry.cancelled or self._stopping):
                            self._deliver(entry.target, result)
                    finally:
                        self._lock.acquire()
                    entry.running = False
                    if entry.retiring:
                        entry.retiring = False
                        self._retiring -= 1
                    if not entry.cancelled:
                        self._push_timer(entry)
            finally:
                self._workers.discard(me)

    def _take(self) -> _Entry | None:
        """The ready target due longest ago, waiting for one; None: this worker leaves.
        Called with the lock held."""
        while True:
            if self._stopping or len(self._workers) - self._retiring > self._pool_size():
                return None  # stopping, or the pool shrank
            while self._ready:
                _, _, entry = heapq.heappop(self._ready)
                if not entry.cancelled:
                    entry.running = True
                    return entry
            self._idle += 1
            try:
                self._work_ready.wait()
            finally:
                self._idle -= 1

    def _probe_once(self, entry: _Entry) -> ProbeResult | None:
        """One probe of ``entry``'s target (None if it raised); sets its next due time."""
        target = entry.target
        started = time.monotonic()
        result: ProbeResult | None = None
        try:
            result = self._probe(build_spec(target, entry.resolver.model()))
            entry.resolver.after(result)
            # Server text in the result is redacted once, before anything shows it.
            result = redact_result(result, target.secrets())
        except Exception:
            # A bug must cost one probe, not this target's whole schedule.
            log.exception("target %s: the probe itself failed", target.name)
            result = None
        # Fixed rate from the start of the probe; a probe longer than the interval
        # delays the next one rather than overlapping it.
        entry.due = max(started + self._next_wait(target), time.monotonic())
        return result

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
