"""Probe every target on its interval: never overlapping itself, bounded overall.

A timer queue and a pool of at most ``max_concurrency`` workers, not a thread per target:
a thousand targets cost a heap of a thousand entries and a handful of threads. One timer
thread moves each target to the ready queue when it is due; idle workers take the target
that has been due longest, so when probes run long every target still gets its turn in
order instead of a few winning every race for a slot. A target is back in the timer queue
only once its probe has ended, so it never overlaps itself. A reload updates the schedule
in place: unchanged targets keep their next due time and their probe in flight.

A target with several models (``model: [a, b]`` or ``model: all``) probes them in turn,
one probe at a time: each model is probed once per interval, the target's probes spread
evenly over it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from streamobs.export.prometheus.model_labels import model_label
from streamobs.probe.models import ModelDiscoveryError, discover_model, list_models
from streamobs.probe.prober import run_probe
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec, Target
from streamobs.report import redact_result
from streamobs.secret import Credential, redact
from streamobs.statelog import StateLog
from streamobs.targets import UNKNOWN_MODEL, TargetConfig

log = logging.getLogger(__name__)


ResultCallback = Callable[[TargetConfig, ProbeResult], None]
# model: all: the models a target probes from now on.
ModelsCallback = Callable[[TargetConfig, tuple[str, ...]], None]
# model: all lists /v1/models again at most this often (and after a 404 of a listed model).
MODEL_LIST_INTERVAL = 60.0


def model_ids(
    target: Target, credential: Credential | None, timeout: float, verify_tls: bool
) -> list[str]:
    """The ids ``/v1/models`` lists, in its order."""
    return [str(m["id"]) for m in list_models(target, credential, timeout, verify_tls)]


class ModelResolver:
    """The models a target probes, in turn: the configured ones; else the first model
    ``/v1/models`` lists (asked again after a 404); or, with ``model: all``, every model it
    lists, the first ``max_models`` of them, listed again every ``MODEL_LIST_INTERVAL``
    seconds and after a 404 (an adapter unloaded?). Used by one thread at a time: a
    target's probes never overlap."""

    def __init__(
        self,
        target: TargetConfig,
        discover: Callable[..., str] = discover_model,
        list_ids: Callable[..., list[str]] = model_ids,
        max_models: int = 10,
        on_change: Callable[[tuple[str, ...]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._on_change = on_change  # model: all, when the list of models changed
        self._discover = discover
        self._list_ids = list_ids
        self.max_models = max_models
        self._clock = clock
        self._models: tuple[str, ...] = tuple(m.name for m in target.models)
        self._listed_at: float | None = None  # model: all: when the list was last asked
        self._turn = 0
        self._states = StateLog(log)

    def models(self) -> tuple[str, ...]:
        """The models in turn now, discovered or listed first when that is due."""
        t = self._target
        if t.all_models:
            if self._listed_at is None or self._clock() - self._listed_at >= MODEL_LIST_INTERVAL:
                self._list()
        elif not self._models:
            self._discover_one()
        return self._models or (UNKNOWN_MODEL,)

    def next_model(self) -> str:
        """The model whose turn it is."""
        models = self.models()
        model = models[self._turn % len(models)]
        self._turn = (self._turn + 1) % len(models)
        return model

    def count(self) -> int:
        """How many models take turns (as known now: nothing is asked)."""
        return max(1, len(self._models))

    def model(self) -> str:
        """The first model (a one-off probe probes that one)."""
        return self.models()[0]

    def after(self, result: ProbeResult) -> None:
        if self._target.models or result.http_status != 404:
            return  # a configured model that 404s fails its own series, nothing more
        if self._target.all_models:
            self._listed_at = None  # list again before the next probe
        else:
            self._models = ()  # redeployed with another model? ask again next time

    def _timeout(self) -> float:
        return self._target.timeouts.connect + self._target.timeouts.headers

    def _discover_one(self) -> None:
        t = self._target
        try:
            self._models = (self._discover(t.target, t.credential, self._timeout(), t.verify_tls),)
        except ModelDiscoveryError as exc:
            if self._states.changed("discovery", "failing"):
                log.warning("target %s: %s", t.name, redact(str(exc), t.secrets(), 500))
            return
        self._states.changed("discovery", "")
        log.info("target %s: serving model %s", t.name, self._models[0])

    def _list(self) -> None:
        t = self._target
        try:
            listed = self._list_ids(t.target, t.credential, self._timeout(), t.verify_tls)
        except ModelDiscoveryError as exc:
            if self._states.changed("discovery", "failing"):
                log.warning("target %s: %s", t.name, redact(str(exc), t.secrets(), 500))
            if self._models:  # keep probing the models listed before; ask again later
                self._listed_at = self._clock()
            return
        self._states.changed("discovery", "")
        self._listed_at = self._clock()
        # One model per label, so two names cannot share (and mix) one set of series.
        labels: set[str] = set()
        unique = []
        for model in listed:
            if model_label(model) not in labels:
                labels.add(model_label(model))
                unique.append(model)
        models = tuple(unique[: self.max_models])
        cut = len(unique) > len(models)
        if self._states.changed("cut", "cut" if cut else "") and cut:
            log.warning(
                "target %s: the server lists %d models; probing the first %d "
                "(max_models_per_target)",
                t.name,
                len(unique),
                len(models),
            )
        if models != self._models:
            shown = ", ".join(model_label(m) for m in models)  # bounded, like the labels
            log.info("target %s: probing models %s", t.name, shown)
            self._models = models
            if self._on_change is not None:
                self._on_change(models)


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
        max_models: int = 10,
        on_models: ModelsCallback | None = None,
        list_ids: Callable[..., list[str]] = model_ids,
    ) -> None:
        self._targets = tuple(targets)
        self._size = max_concurrency
        self._max_models = max_models
        self._on_result = on_result
        self._on_models = on_models
        self._probe = probe
        self._discover = discover
        self._list_ids = list_ids
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

    def update(
        self, targets: Sequence[TargetConfig], max_concurrency: int, max_models: int | None = None
    ) -> None:
        """Take a reloaded target list: an unchanged target keeps its schedule (and its
        probe in flight), a changed one starts over, a removed one stops."""
        with self._lock:
            self._targets = tuple(targets)
            self._size = max_concurrency
            if max_models is not None:
                self._max_models = max_models
                for entry in self._entries.values():
                    entry.resolver.max_models = max_models  # from its next listing on
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
        resolver = ModelResolver(
            target,
            self._discover,
            self._list_ids,
            self._max_models,
            on_change=lambda models: self._models_changed(target, models),
        )
        entry = _Entry(target, resolver, time.monotonic() + delay)
        self._entries[target.name] = entry
        self._push_timer(entry)

    def _push_timer(self, entry: _Entry) -> None:
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (entry.due, next(self._seq), entry))
        if earliest is None or entry.due < earliest:
            self._timer_wake.notify()

    def _next_wait(self, target: TargetConfig, models: int) -> float:
        """Until the target's next probe: each of its ``models`` once per interval."""
        wait = target.interval + self._rng.uniform(-target.jitter, target.jitter)
        return wait / max(1, models)

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
            result = self._probe(target.probe_spec(entry.resolver.next_model()))
            entry.resolver.after(result)
            # Server text in the result is redacted once, before anything shows it.
            result = redact_result(result, target.secrets())
        except Exception:
            # A bug must cost one probe, not this target's whole schedule.
            log.exception("target %s: the probe itself failed", target.name)
            result = None
        # Fixed rate from the start of the probe; a probe longer than the interval
        # delays the next one rather than overlapping it.
        turns = entry.resolver.count()
        entry.due = max(started + self._next_wait(target, turns), time.monotonic())
        return result

    def _models_changed(self, target: TargetConfig, models: tuple[str, ...]) -> None:
        # On the worker about to probe the target: none of its probes is in flight.
        if self._on_models is None:
            return
        try:
            self._on_models(target, models)
        except Exception:
            log.exception("target %s: taking its new list of models failed", target.name)

    def _deliver(self, target: TargetConfig, result: ProbeResult) -> None:
        try:
            self._on_result(target, result)
        except Exception:
            # A broken exporter must not stop the probing of this target.
            log.exception("target %s: recording a probe result failed", target.name)
        # A line when a target starts failing (or fails differently) and when it recovers;
        # every probe's outcome is on /metrics and, at debug level, here.
        # Per model when the target has several, so one failing model does not make the
        # target's state flap with every turn.
        several = len(target.models) > 1 or target.all_models
        who = f"target {target.name}" + (f" model {model_label(result.model)}" if several else "")
        self._states.report(
            (target.name, result.model) if several else target.name,
            None if result.outcome is Outcome.OK else result.outcome.value,
            f"{who}: probes failing",
            f"{who}: probes succeed again",
        )
        if result.outcome is not Outcome.OK:
            log.debug("%s: probe %s: %s", who, result.outcome.value, result.error)
