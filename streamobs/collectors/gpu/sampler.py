"""Sample the GPUs in the background, keeping the latest snapshot for the exporter.

Off the scrape path on purpose: NVML calls can be slow (PCIe throughput alone samples for
20 ms per call) or hang inside the driver when a GPU falls off the bus, and neither may
delay ``/metrics``. Each pass runs in its own daemon thread and the sampler waits for it
at most ``deadline`` seconds; a pass that misses it is abandoned (a thread inside the
driver cannot be cancelled), the collector is reported down, and no new pass starts until
the stuck call has returned, so stuck threads never pile up. Daemon threads, not an
executor: ``concurrent.futures`` joins its workers at exit, so a hung call would keep
the process from exiting.

NVML is initialised once and kept. A pass that fails (``Unknown``, ``GpuIsLost``, a hung
call) reports the collector down, and NVML is shut down and initialised again after a
backoff of ``interval``, doubled per consecutive failure up to ``backoff_max``. A
missing library (no NVIDIA driver, as on CI) is retried on the same schedule, quietly.
Logging follows state changes only: one line when the collector goes down or its error
changes, one when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamobs.collectors.gpu.export import GpuCollector
from streamobs.collectors.gpu.names import COLLECTOR_NAME
from streamobs.collectors.gpu.settings import GpuCollectorConfig
from streamobs.collectors.gpu.snapshot import (
    NOT_SAMPLED,
    CallFailed,
    GpuSnapshot,
    Nvml,
    NvmlSession,
    PassResult,
    Progress,
    close_session,
    describe_error,
    load_nvml,
    open_session,
    read_devices,
    read_proc_cmdline,
)
from streamobs.collectors.guard import Export

_log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0
DEFAULT_DEADLINE = 3.0
DEFAULT_BACKOFF_MAX = 300.0
DEFAULT_SERVED_MODEL_MATCH: tuple[str, ...] = ("vllm",)


class _Hung(Exception):
    """The NVML work did not finish within the deadline."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    session: NvmlSession
    result: PassResult


class GpuSampler:
    """Owns the sampling thread and NVML's lifecycle; ``latest()`` never blocks on NVML.
    As a registered collector (``name``, ``sources``, ``export``) it is host-wide."""

    name = COLLECTOR_NAME

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL,
        deadline: float = DEFAULT_DEADLINE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        served_model_match: Sequence[str] = DEFAULT_SERVED_MODEL_MATCH,
        nvml: Nvml | None = None,
        read_cmdline: Callable[[int], str | None] = read_proc_cmdline,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``interval``: seconds between passes; ``deadline``: seconds a pass may take;
        ``served_model_match``: case-insensitive substrings of a process's command line
        that mark it as the model server. ``nvml`` replaces the ``pynvml`` module (tests);
        ``clock`` (monotonic) times passes and backoff, ``wall_clock`` stamps snapshots."""
        if not interval > 0 or not deadline > 0:
            raise ValueError("interval and deadline must be positive")
        self._interval = float(interval)
        self._deadline = float(deadline)
        self._backoff_max = max(float(backoff_max), self._interval)
        self._served_model_match = tuple(served_model_match)
        self._nvml = nvml
        self._read_cmdline = read_cmdline
        self._clock = clock
        self._wall_clock = wall_clock

        self._lock = threading.Lock()  # guards _latest
        self._latest = NOT_SAMPLED
        self._sampling = threading.Lock()  # one pass at a time, thread or caller
        self._session: NvmlSession | None = None
        self._stale: Nvml | None = None  # initialised, to shut down before the next init
        self._failures = 0
        self._next_attempt = float("-inf")
        self._stuck: threading.Thread | None = None
        self._stuck_call = ""
        self._state = ""  # "" before any pass, "up", or "down: <error>"
        self._field_errors: dict[tuple[int, str], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exporter = GpuCollector(self.latest)
        self.settings: GpuCollectorConfig | None = None  # what it was built from, if known

    @classmethod
    def from_settings(cls, settings: GpuCollectorConfig) -> GpuSampler:
        sampler = cls(
            interval=settings.interval,
            deadline=settings.deadline,
            backoff_max=settings.backoff_max,
            served_model_match=settings.served_model_match,
        )
        sampler.settings = settings
        return sampler

    # -- public ---------------------------------------------------------------------
    def sources(self) -> Sequence[str]:
        return ("",)

    def export(self) -> Export:
        return self._exporter.export()

    def latest(self) -> GpuSnapshot:
        with self._lock:
            return self._latest

    def start(self) -> None:
        """Start sampling in a daemon thread; the first pass runs at once."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="streamobs-gpu", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and shut NVML down (bounded by the deadline)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._sampling:
            nvml = self._session.nvml if self._session is not None else self._stale
            self._session = self._stale = None
            if nvml is not None and not self._is_stuck():
                try:
                    self._run_bounded(lambda progress: close_session(nvml, progress))
                except _Hung:
                    _log.warning("nvmlShutdown did not return within %gs", self._deadline)

    def sample(self) -> GpuSnapshot:
        """One step: a pass when one is due (always while up; after the backoff while down).
        Returns the latest snapshot. The sampling thread calls this; tests may too."""
        with self._sampling:
            if self._session is None and self._clock() < self._next_attempt:
                return self.latest()
            started = self._clock()
            sampled_at = self._wall_clock()
            if self._is_stuck():
                # Another call into a driver that has not answered the last one would
                # only add a second stuck thread.
                self._fail(f"sampling still stuck in {self._stuck_call}", started)
                return self.latest()
            progress = Progress()
            try:
                outcome = self._run_bounded(self._pass, progress)
            except _Hung:
                self._stale = self._initialised(progress)
                self._fail(
                    f"sampling did not finish within {self._deadline:g}s, stuck in "
                    f"{self._stuck_call}",
                    started,
                )
            except CallFailed as exc:
                self._stale = self._initialised(progress)
                self._fail(str(exc), started, no_library=exc.no_library)
            except Exception as exc:  # a bug must not stop sampling either
                self._stale = self._initialised(progress)
                self._fail(f"unexpected error: {describe_error(exc)}", started)
            else:
                self._succeed(outcome, started, sampled_at)
            return self.latest()

    # -- internals ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.sample()
            except Exception:  # never let the thread die; sample() guards already
                _log.exception("GPU sampling failed")
            due = started + self._interval if self._session is not None else self._next_attempt
            self._stop.wait(max(due - self._clock(), 0.0))

    def _pass(self, progress: Progress) -> _Outcome:
        """Runs in the worker thread: (re)initialise when needed, then read every device."""
        session = self._session
        if session is None:
            nvml = self._nvml if self._nvml is not None else load_nvml()
            if self._stale is not None:
                close_session(self._stale, progress)
            session = open_session(nvml, progress)
        result = read_devices(
            session,
            progress,
            read_cmdline=self._read_cmdline,
            served_model_match=self._served_model_match,
        )
        return _Outcome(session, result)

    def _run_bounded(
        self, work: Callable[[Progress], _Outcome | None], progress: Progress | None = None
    ) -> _Outcome | None:
        progress = progress if progress is not None else Progress()
        box: list[_Outcome | BaseException | None] = []

        def run() -> None:
            try:
                box.append(work(progress))
            except BaseException as exc:
                box.append(exc)

        worker = threading.Thread(target=run, name="streamobs-nvml", daemon=True)
        worker.start()
        worker.join(self._deadline)
        if worker.is_alive():
            self._stuck, self._stuck_call = worker, progress.current or "NVML"
            raise _Hung()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _initialised(self, progress: Progress) -> Nvml | None:
        """After a failed pass: the module whose init is still open, if any."""
        if progress.initialised is not None:
            return progress.initialised
        return self._session.nvml if self._session is not None else None

    def _is_stuck(self) -> bool:
        if self._stuck is not None and not self._stuck.is_alive():
            self._stuck = None
        return self._stuck is not None

    def _succeed(self, outcome: _Outcome | None, started: float, sampled_at: float) -> None:
        assert outcome is not None
        self._session, self._stale, self._failures = outcome.session, None, 0
        result = outcome.result
        self._publish(
            GpuSnapshot(
                up=True,
                error=None,
                duration_seconds=self._clock() - started,
                sampled_at=sampled_at,
                devices=result.devices,
            )
        )
        if self._state != "up":
            summary = ", ".join(f"{d.index}: {d.name}" for d in outcome.session.devices)
            verb = "is up again" if self._state else "is up"
            _log.info("GPU collector %s: %d GPU(s) (%s)", verb, len(result.devices), summary)
            self._state = "up"
        self._log_fields(outcome.session, result)

    def _fail(self, error: str, started: float, *, no_library: bool = False) -> None:
        self._session = None
        self._failures += 1
        delay = min(self._interval * 2 ** min(self._failures - 1, 32), self._backoff_max)
        now = self._clock()
        self._next_attempt = now + delay
        self._publish(GpuSnapshot(False, error, now - started, self._wall_clock()))
        self._field_errors = {}
        state = f"down: {error}"
        if state == self._state:
            return
        self._state = state
        if no_library:
            # Expected on any host without an NVIDIA driver: say it once, calmly.
            _log.info(
                "GPU collector off: NVML library not found (%s); other series unaffected", error
            )
        else:
            _log.warning(
                "GPU collector down: %s; re-initialising NVML with backoff (next in %gs)",
                error,
                delay,
            )

    def _log_fields(self, session: NvmlSession, result: PassResult) -> None:
        names = {d.index: d.name for d in session.devices}
        for index, function in dict.fromkeys(result.unsupported):
            _log.debug("GPU %d (%s) does not support %s", index, names.get(index), function)
        for key, error in result.field_errors.items():
            if self._field_errors.get(key) != error:
                _log.warning("GPU %d: %s failed with %s; skipping it", key[0], key[1], error)
        for key in self._field_errors.keys() - result.field_errors.keys():
            _log.info("GPU %d: %s works again", key[0], key[1])
        self._field_errors = dict(result.field_errors)

    def _publish(self, snapshot: GpuSnapshot) -> None:
        with self._lock:
            self._latest = snapshot
