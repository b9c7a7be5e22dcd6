"""Kernel stamps move onto the monotonic timeline through a clock pair no preemption split."""

from __future__ import annotations

import time

from streamobs.http import stamps

OFFSET = 1_700_000_000_000_000_000  # realtime minus monotonic, as the clocks really stand
TICK = 4_000_000  # a scheduler tick: what a preemption between two reads costs


class Clocks:
    """A monotonic clock that advances 100 ns a read, and a realtime clock tied to it;
    ``preempt`` makes the next realtime read (or several) happen a tick after the
    monotonic read before it."""

    def __init__(self) -> None:
        self.now = 5_000_000_000
        self.offset = OFFSET
        self.preempted = 0

    def monotonic(self) -> int:
        self.now += 100
        return self.now

    def realtime(self) -> int:
        if self.preempted:
            self.preempted -= 1
            self.now += TICK
        self.now += 100
        return self.now + self.offset


def test_a_tight_pair_ties_the_clocks_to_within_its_width() -> None:
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    assert abs(tie.offset_ns() - OFFSET) <= 100


def test_a_preempted_pair_keeps_the_last_tight_tie() -> None:
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    tight = tie.offset_ns()
    clocks.preempted = 1
    assert tie.offset_ns() == tight  # the naive two reads would be a tick (4 ms) off


def test_before_any_tight_pair_the_tightest_of_a_few_is_taken() -> None:
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    clocks.preempted = 3  # the first three pairs are split
    assert abs(tie.offset_ns() - OFFSET) <= 100
    assert clocks.preempted == 0


def test_a_step_of_the_realtime_clock_is_seen_by_the_next_tight_pair() -> None:
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    tie.offset_ns()
    clocks.offset += 3_600_000_000_000  # settimeofday: an hour forward
    assert abs(tie.offset_ns() - clocks.offset) <= 100


def test_the_real_clocks_convert_there_and_back() -> None:
    now = time.perf_counter_ns()
    wall = stamps.to_realtime(now)
    assert abs(wall - time.clock_gettime_ns(time.CLOCK_REALTIME)) < 1_000_000_000
    assert abs(stamps.to_monotonic(wall) - now) <= stamps.TIGHT_PAIR_NS


def test_a_step_seen_only_by_wide_pairs_replaces_the_last_tie() -> None:
    """A host whose clock reads are never tight (a trapped clock source in a VM) still
    sees a step: the wide pair's bracket rules the old tie out."""
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    tie.offset_ns()
    clocks.offset += 3_600_000_000_000
    clocks.preempted = 1
    assert abs(tie.offset_ns() - clocks.offset) <= TICK
    clocks.preempted = 1  # the next wide pair allows the new tie: it is kept
    kept = tie.offset_ns()
    assert abs(kept - clocks.offset) <= TICK


def test_a_wide_pair_at_the_edge_of_the_last_tie_keeps_it() -> None:
    """A pair preempted after its realtime read allows offsets up to a tick below the
    truth; the last tight tie, a little off itself, must not be replaced by its middle."""
    clocks = Clocks()
    tie = stamps.ClockTie(clocks.monotonic, clocks.realtime)
    tight = tie.offset_ns()
    clocks.offset += 5_000  # within the tie's own error: the last tie is below the bracket
    clocks.preempted = 1
    assert tie.offset_ns() == tight
