"""Match servers' ``llm_request`` spans to the probes that caused them, by trace id.

vLLM exports spans in batches seconds after a request ends, and a span may even arrive
before its probe's result is recorded, so the join is asynchronous and works both ways: a
finished probe registers its trace id with a deadline (``expect``), a received span is
matched against those (``offer``), and a span nobody expects yet is kept for the same wait
in case its probe registers late. Whatever stays unmatched is counted, never kept: pending
probes, early spans and remembered ids are each bounded, the oldest going first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from streamobs.traces.records import ServerSpan
from streamobs.traces.stats import JoinStats

log = logging.getLogger(__name__)

OnSpan = Callable[[ServerSpan | None], None]  # None: the wait ended without a span
DEFAULT_MAX_PENDING = 10_000


class SpanJoin:
    """``expect()`` and ``offer()`` take a lock for a few dictionary operations; callbacks
    run outside it, on the thread that completed the match (a receiver's handler, or the
    join's own timer thread for a wait that ended), and must be quick."""

    def __init__(
        self,
        wait: float,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if wait <= 0 or max_pending < 1:
            raise ValueError("wait must be positive and max_pending at least 1")
        self.wait = wait
        self._max = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        # trace id -> (deadline, callback); insertion order is deadline order (one wait).
        self._pending: OrderedDict[str, tuple[float, OnSpan]] = OrderedDict()
        # Spans that came before their probe registered: trace id -> (deadline, span).
        self._early: OrderedDict[str, tuple[float, ServerSpan]] = OrderedDict()
        # Ids whose wait ended, so a span after it is counted late, not unmatched.
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._stats = JoinStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the two sides --------------------------------------------------------------
    def expect(self, trace_id: str, on_span: OnSpan) -> None:
        """Call ``on_span`` once: with the span of ``trace_id`` when it comes within the
        wait, else with None when the wait ends."""
        calls: list[tuple[OnSpan, ServerSpan | None]] = []
        with self._lock:
            early = self._early.pop(trace_id, None)
            if early is not None:
                self._count(joined=1)
                calls.append((on_span, early[1]))
            else:
                previous = self._pending.pop(trace_id, None)
                if previous is not None:  # the same id twice: the first waits no longer
                    calls.append((previous[1], None))
                    self._count(probes_unjoined=1)
                self._pending[trace_id] = (self._clock() + self.wait, on_span)
                while len(self._pending) > self._max:
                    _, (_, dropped) = self._pending.popitem(last=False)
                    self._count(probes_dropped=1)
                    calls.append((dropped, None))
        self._wake.set()
        _call(calls)

    def offer(self, spans: Iterable[ServerSpan]) -> None:
        """Spans just received, in any order and from any number of servers."""
        calls: list[tuple[OnSpan, ServerSpan | None]] = []
        with self._lock:
            for span in spans:
                pending = self._pending.pop(span.trace_id, None)
                if pending is not None:
                    self._count(joined=1)
                    calls.append((pending[1], span))
                elif span.trace_id in self._expired:
                    self._count(late=1)
                elif span.trace_id in self._early:
                    self._count(unmatched=1)  # a second span of one trace: ours is the first
                else:
                    self._early[span.trace_id] = (self._clock() + self.wait, span)
                    while len(self._early) > self._max:
                        self._early.popitem(last=False)
                        self._count(unmatched=1)
        _call(calls)

    def expire(self) -> float | None:
        """End every wait that is due; the next deadline, if any (the timer calls this)."""
        now = self._clock()
        calls: list[tuple[OnSpan, ServerSpan | None]] = []
        with self._lock:
            while self._pending:
                trace_id, (deadline, on_span) = next(iter(self._pending.items()))
                if deadline > now:
                    break
                del self._pending[trace_id]
                self._count(probes_unjoined=1)
                self._expired[trace_id] = None
                while len(self._expired) > self._max:
                    self._expired.popitem(last=False)
                calls.append((on_span, None))
            while self._early:
                trace_id, (deadline, _span) = next(iter(self._early.items()))
                if deadline > now:
                    break
                del self._early[trace_id]
                self._count(unmatched=1)
            deadlines = [
                next(iter(queue.values()))[0] for queue in (self._pending, self._early) if queue
            ]
        _call(calls)
        return min(deadlines) if deadlines else None

    def stats(self) -> JoinStats:
        with self._lock:
            return self._stats

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._early)

    def _count(self, **add: int) -> None:
        stats = self._stats
        self._stats = JoinStats(
            **{name: getattr(stats, name) + add.get(name, 0) for name in stats.__slots__}
        )

    # -- the timer ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="span-join", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deadline = self.expire()
            except Exception:  # a bug here must not end the waits for good
                log.exception("ending span waits failed")
                deadline = None
            timeout = 1.0 if deadline is None else max(0.0, deadline - self._clock())
            self._wake.wait(min(timeout, 1.0))
            self._wake.clear()


def _call(calls: list[tuple[OnSpan, ServerSpan | None]]) -> None:
    for on_span, span in calls:
        try:
            on_span(span)
        except Exception:
            log.exception("handling a joined span failed")
