"""The scheduler: a timer queue and a bounded worker pool, no thread per target.

Fake probes (no network) record when each target was probed; every timing check is a
generous bound or a lower bound (a loaded machine only makes gaps longer), and waits poll
with deadlines.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from itertools import pairwise

import pytest

from streamobs.config import parse_config
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.reference import sample_result
from streamobs.scheduler import Scheduler
from streamobs.targets import TargetConfig


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def targets(n: int, interval: str, jitter: str = "0s", prefix: str = "t") -> list[TargetConfig]:
    config = parse_config(
        {
            "targets": [
                {
                    "name": f"{prefix}{i}",
                    "url": f"http://127.0.0.{1 + i // 250}:{8000 + i}",
                    "model": "m",
                    "interval": interval,
                    "jitter": jitter,
                }
                for i in range(n)
            ]
        }
    )
    return list(config.targets)


class FakeProbe:
    """Records each probe's start per target (by port) and how many overlap, per target
    and overall; each probe takes ``seconds`` or waits for ``gate`` to open."""

    def __init__(self, seconds: float = 0.0, gate: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.gate = gate
        self.lock = threading.Lock()
        self.starts: dict[int, list[float]] = defaultdict(list)
        self.in_flight: dict[int, int] = defaultdict(int)
        self.most_in_flight_per_target = 0
        self.running = 0
        self.most_running = 0

    def __call__(self, spec: ProbeSpec) -> ProbeResult:
        port = spec.target.port
        with self.lock:
            self.starts[port].append(time.monotonic())
            self.in_flight[port] += 1
            self.most_in_flight_per_target = max(
                self.most_in_flight_per_target, self.in_flight[port]
            )
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                self.gate.wait(30)
            elif self.seconds:
                time.sleep(self.seconds)
            return replace(sample_result(), model=spec.model)
        finally:
            with self.lock:
                self.in_flight[port] -= 1
                self.running -= 1

    def count(self, port: int) -> int:
        with self.lock:
            return len(self.starts[port])


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_target: dict[str, int] = defaultdict(int)

    def __call__(self, target: TargetConfig, result: ProbeResult) -> None:
        with self.lock:
            self.by_target[target.name] += 1

    def get(self, name: str) -> int:
        with self.lock:
            return self.by_target[name]


@pytest.fixture
def schedulers() -> Iterator[list[Scheduler]]:
    made: list[Scheduler] = []
    yield made
    for scheduler in made:
        scheduler.stop(5)


def start(
    made: list[Scheduler],
    configured: Sequence[TargetConfig],
    size: int,
    probe: FakeProbe,
    results: Results | None = None,
) -> Scheduler:
    scheduler = Scheduler(
        configured, size, results or Results(), probe, lambda *a: "m", random.Random(7)
    )
    made.append(scheduler)
    scheduler.start()
    return scheduler


def probe_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("probe-"))


def test_two_hundred_targets_none_starves_and_threads_stay_bounded(
    schedulers: list[Scheduler],
) -> None:
    configured = targets(200, "1s", "100ms")
    probe = FakeProbe(seconds=0.02)
    size = 8
    before = threading.active_count()
    scheduler = start(schedulers, configured, size, probe)
    ports = [t.target.port for t in configured]
    most_threads = 0

    def every_target_probed(times: int) -> bool:
        nonlocal most_threads
        most_threads = max(most_threads, threading.active_count() - before)
        return all(probe.count(port) >= times for port in ports)

    wait_for(lambda: every_target_probed(5), 60, "5 probes of every target")
    stats = scheduler.stats()
    # Workers and the timer; nothing per target.
    assert stats["workers"] <= size
    assert most_threads <= size + 1
    assert probe_threads() <= size + 1
    assert probe.most_running <= size
    assert probe.most_in_flight_per_target == 1
    with probe.lock:
        starts = {port: list(probe.starts[port]) for port in ports}
    # No target starves: after its first probe, each came again within 2 intervals.
    gaps = [b - a for times in starts.values() for a, b in pairwise(times)]
    assert max(gaps) <= 2.0, f"longest gap {max(gaps):.2f} s"
    # And no faster than the interval less the jitter: the schedule is a rate, not a race.
    assert min(gaps) >= 0.9 - 0.005
    assert 0.95 <= statistics.median(gaps) <= 1.2


def test_jitter_spreads_each_targets_probes_within_its_bounds(
    schedulers: list[Scheduler],
) -> None:
    configured = targets(3, "200ms", "50ms")
    probe = FakeProbe()
    start(schedulers, configured, 2, probe)
    ports = [t.target.port for t in configured]
    wait_for(lambda: all(probe.count(p) >= 12 for p in ports), 30, "12 probes per target")
    with probe.lock:
        gaps = [b - a for p in ports for a, b in pairwise(probe.starts[p])]
    assert min(gaps) >= 0.15 - 0.005
    assert len({round(g, 3) for g in gaps}) > len(gaps) // 2  # not one fixed period


def test_long_probes_share_the_workers_fairly(schedulers: list[Scheduler]) -> None:
    # 20 targets due every 100 ms, 2 workers, 50 ms probes: five times more work than the
    # pool can do. The target due longest ago goes next, so all advance in step.
    configured = targets(20, "100ms")
    probe = FakeProbe(seconds=0.05)
    start(schedulers, configured, 2, probe)
    ports = [t.target.port for t in configured]
    wait_for(lambda: all(probe.count(p) >= 6 for p in ports), 60, "6 probes per target")
    with probe.lock:
        counts = [len(probe.starts[p]) for p in ports]
    assert max(counts) - min(counts) <= 2, counts
    assert probe.most_running <= 2
    assert probe.most_in_flight_per_target == 1


def test_reload_keeps_unchanged_targets_and_drops_removed_ones_results(
    schedulers: list[Scheduler],
) -> None:
    gate = threading.Event()
    probe = FakeProbe(gate=gate)
    results = Results()
    kept, removed, changed = targets(3, "100ms")
    scheduler = start(schedulers, [kept, removed, changed], 4, probe, results)
    ports = (kept.target.port, removed.target.port, changed.target.port)
    wait_for(lambda: all(probe.count(p) == 1 for p in ports), 10, "three probes in flight")
    changed_again = replace(changed, max_tokens=changed.max_tokens + 1)
    scheduler.update([kept, changed_again], 4)
    # The unchanged target's probe is still the one in flight (not restarted); the changed
    # one starts over at once, alongside its old probe, which counts nowhere.
    wait_for(lambda: probe.count(changed.target.port) == 2, 10, "the changed target restarted")
    assert probe.count(kept.target.port) == 1
    gate.set()
    wait_for(lambda: results.get(kept.name) >= 2, 10, "the kept target's results")
    wait_for(lambda: results.get(changed.name) >= 2, 10, "the changed target's results")
    time.sleep(0.3)
    assert results.get(removed.name) == 0  # its in-flight probe ended after removal
    assert probe.count(removed.target.port) == 1  # and it was never probed again


def test_resizing_the_pool_bounds_running_probes(schedulers: list[Scheduler]) -> None:
    configured = targets(12, "100ms")
    probe = FakeProbe(seconds=0.1)
    scheduler = start(schedulers, configured, 6, probe)
    wait_for(lambda: probe.most_running == 6, 20, "six probes at once")
    scheduler.update(configured, 2)
    wait_for(lambda: scheduler.stats()["workers"] <= 2, 20, "the pool to shrink to 2")
    with probe.lock:
        probe.most_running = 0
    counted = sum(probe.count(t.target.port) for t in configured)
    wait_for(
        lambda: sum(probe.count(t.target.port) for t in configured) >= counted + 20,
        30,
        "20 more probes",
    )
    assert probe.most_running <= 2
    scheduler.update(configured, 4)
    wait_for(lambda: probe.most_running >= 3, 20, "more probes at once after growing")
    assert scheduler.stats()["workers"] <= 4


def test_stop_is_bounded_by_the_grace_and_says_whether_probes_finished(
    schedulers: list[Scheduler],
) -> None:
    gate = threading.Event()
    probe = FakeProbe(gate=gate)
    results = Results()
    configured = targets(5, "100ms")
    scheduler = Scheduler(configured, 3, results, probe, lambda *a: "m")
    scheduler.start()
    wait_for(lambda: probe.running == 3, 10, "three probes in flight")
    began = time.monotonic()
    assert scheduler.stop(0.5) is False
    assert time.monotonic() - began < 0.5 + 2.0
    gate.set()
    wait_for(lambda: probe_threads() == 0, 10, "the workers to end")
    assert sum(results.get(t.name) for t in configured) == 0  # ended after stop: not counted

    quick = start(schedulers, targets(5, "100ms", prefix="q"), 3, FakeProbe(seconds=0.01))
    time.sleep(0.3)
    assert quick.stop(5) is True


def test_a_probe_that_raises_costs_one_probe_not_the_schedule(
    schedulers: list[Scheduler],
) -> None:
    calls = [0]
    results = Results()
    (target,) = targets(1, "100ms")

    def flaky(spec: ProbeSpec) -> ProbeResult:
        calls[0] += 1
        if calls[0] % 2:
            raise RuntimeError("a bug")
        return sample_result()

    scheduler = Scheduler([target], 2, results, flaky, lambda *a: "m")
    schedulers.append(scheduler)
    scheduler.start()
    wait_for(lambda: results.get(target.name) >= 3, 10, "results between the failures")
