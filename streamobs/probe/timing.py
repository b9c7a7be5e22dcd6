"""How far a probe's stamps can be trusted, event by event, and what follows for the probe.

A read's kernel stamp is that of its newest segment. The last event a read completes ends
in that segment (when nothing of a later event follows it), so its stamp is exact; the
events before it in the same read ended up to ``spread_ns`` earlier (see
``streamobs.http.channel``). A probe whose TTFT, ITL or e2e could be off by more than
``TOLERANCE_NS`` is *degraded*: it still counts for availability, never for latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from streamobs.http.channel import ReadStamp, SendStamp
from streamobs.probe.delivery import BURST_GAP_NS
from streamobs.probe.result import Degraded, TimingQuality

# The largest stamp error a probe may carry and still be exact.
TOLERANCE_NS = 1_000_000


@dataclass(slots=True)
class EventStamps:
    """Arrival and error bound of every content event, and the reads that carried them."""

    tokens: list[int] = field(default_factory=list)
    token_errors: list[int] = field(default_factory=list)
    token_reads: list[int] = field(default_factory=list)
    events_by_read: list[int] = field(default_factory=list)
    read_spread: dict[int, int] = field(default_factory=dict)
    read_segments: dict[int, int] = field(default_factory=dict)
    done_error: int | None = None
    last_arrival_ns: int | None = None
    max_lateness_ns: int = 0
    clock_stamps: bool = False
    _stamp: ReadStamp | None = None
    _exact_tail: bool = False

    def read_with_events(self, count: int, stamp: ReadStamp, *, exact_tail: bool) -> None:
        """A read that completed ``count`` events; ``exact_tail``: no partial event after
        the last of them."""
        self.events_by_read.append(count)
        # A clock-stamped read vouches for nothing: its spread is unknown.
        self.read_spread[len(self.events_by_read)] = stamp.spread_ns if stamp.kernel else -1
        if stamp.segments is not None:
            self.read_segments[len(self.events_by_read)] = stamp.segments
        self._stamp = stamp
        self._exact_tail = exact_tail and stamp.tail_exact and stamp.kernel
        self.max_lateness_ns = max(self.max_lateness_ns, stamp.lateness_ns)
        self.last_arrival_ns = stamp.arrival_ns
        if not stamp.kernel:
            self.clock_stamps = True

    def _error(self, last: bool) -> int:
        assert self._stamp is not None
        return 0 if last and self._exact_tail else self._stamp.spread_ns

    def token(self, arrival_ns: int, last: bool) -> None:
        self.tokens.append(arrival_ns)
        self.token_errors.append(self._error(last))
        self.token_reads.append(len(self.events_by_read))

    def done(self, last: bool) -> None:
        self.done_error = self._error(last)

    def done_at_close(self) -> None:
        """The stream ended with the connection: its end is the last bytes' arrival."""
        self.done_error = 0 if self._exact_tail else (self._stamp.spread_ns if self._stamp else 0)

    def vouched_reads(self) -> frozenset[int]:
        """Reads whose events really arrived together: their spread is smaller than the
        gaps tokens spaced out by a model would have left between them, or the kernel says
        they came in fewer segments than half their number (sent together, however late
        the reader was)."""
        per_read: dict[int, int] = {}
        for read in self.token_reads:
            per_read[read] = per_read.get(read, 0) + 1
        vouched = set()
        for read, count in per_read.items():
            spread = self.read_spread.get(read, -1)
            segments = self.read_segments.get(read)
            prompt = 0 <= spread <= max(count - 1, 1) * BURST_GAP_NS
            bundled = segments is not None and count >= 2 and 2 * segments <= count
            if prompt or bundled:
                vouched.add(read)
        return frozenset(vouched)


def assess_timing(
    sent: SendStamp | None, stamps: EventStamps, run_queue_wait_ns: int | None
) -> TimingQuality:
    send_error = sent.error_ns if sent is not None else 0
    errors = stamps.token_errors
    ttft = send_error + errors[0] if errors else None
    itl = max((max(a, b) for a, b in pairwise(errors)), default=None)
    e2e = send_error + stamps.done_error if stamps.done_error is not None else None
    max_error = max((e for e in (ttft, itl, e2e) if e is not None), default=0)
    degraded: Degraded | None = None
    if (sent is not None and not sent.kernel) or stamps.clock_stamps:
        degraded = Degraded.NO_KERNEL_STAMPS
    elif max_error > TOLERANCE_NS:
        degraded = Degraded.LATE_READS
    return TimingQuality(
        degraded=degraded,
        max_error_ns=max_error,
        ttft_error_ns=ttft,
        itl_error_ns=itl,
        e2e_error_ns=e2e,
        max_lateness_ns=stamps.max_lateness_ns,
        run_queue_wait_ns=run_queue_wait_ns,
        sent_by_kernel=sent.kernel if sent is not None else False,
    )
