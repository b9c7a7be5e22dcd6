"""The asynchronous join of spans to probes: either order, bounded wait, bounded memory,
and every span that matches nothing counted."""

from __future__ import annotations

import threading

from streamobs.traces.join import SpanJoin
from streamobs.traces.records import ServerSpan, server_timing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def span(trace_id: str, ttft: float = 0.05) -> ServerSpan:
    return ServerSpan(trace_id, "11" * 8, "22" * 8, 1, 2, ttft_seconds=ttft)


def tid(n: int) -> str:
    return f"{n:032x}"


def test_span_after_its_probe_is_joined() -> None:
    clock = Clock()
    join = SpanJoin(5.0, clock=clock)
    got: list[ServerSpan | None] = []
    join.expect(tid(1), got.append)
    join.offer([span(tid(2)), span(tid(1), 0.07)])
    assert got == [span(tid(1), 0.07)]
    assert join.stats().joined == 1
    clock.now += 10
    join.expire()
    stats = join.stats()
    assert stats.unmatched == 1  # tid(2): nobody of ours asked for it
    assert stats.probes_unjoined == 0


def test_span_before_its_probe_is_joined_when_the_probe_registers() -> None:
    clock = Clock()
    join = SpanJoin(5.0, clock=clock)
    join.offer([span(tid(3))])
    got: list[ServerSpan | None] = []
    clock.now += 4
    join.expect(tid(3), got.append)
    assert got == [span(tid(3))]
    assert join.pending() == 0


def test_wait_ends_without_a_span_and_a_later_span_is_late() -> None:
    clock = Clock()
    join = SpanJoin(5.0, clock=clock)
    got: list[ServerSpan | None] = []
    join.expect(tid(4), got.append)
    clock.now += 4.9
    join.expire()
    assert got == []
    clock.now += 0.2
    join.expire()
    assert got == [None]
    join.offer([span(tid(4))])
    stats = join.stats()
    assert (stats.probes_unjoined, stats.late, stats.joined) == (1, 1, 0)


def test_memory_is_bounded() -> None:
    clock = Clock()
    join = SpanJoin(60.0, max_pending=100, clock=clock)
    ended: list[ServerSpan | None] = []
    for n in range(1000):
        join.expect(tid(n), ended.append)
        join.offer([span(tid(100_000 + n))])
    assert join.pending() <= 200
    stats = join.stats()
    assert stats.probes_dropped == 900 and ended == [None] * 900
    assert stats.unmatched == 900


def test_timer_thread_ends_waits_on_its_own() -> None:
    join = SpanJoin(0.05)
    done = threading.Event()
    got: list[ServerSpan | None] = []

    def on_span(found: ServerSpan | None) -> None:
        got.append(found)
        done.set()

    join.start()
    try:
        join.expect(tid(9), on_span)
        assert done.wait(10)
        assert got == [None]
    finally:
        join.stop()


def test_a_failing_callback_does_not_stop_the_join() -> None:
    join = SpanJoin(5.0, clock=Clock())

    def broken(found: ServerSpan | None) -> None:
        raise RuntimeError("bug")

    got: list[ServerSpan | None] = []
    join.expect(tid(1), broken)
    join.expect(tid(2), got.append)
    join.offer([span(tid(1)), span(tid(2))])
    assert got == [span(tid(2))]


def test_path_time_is_client_ttft_minus_server_ttft() -> None:
    timing = server_timing(130_000_000, span(tid(1), 0.1))
    assert timing.path_seconds == 0.13 - 0.1
    assert server_timing(None, span(tid(1))).path_seconds is None
