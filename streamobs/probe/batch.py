"""Run a batch of probes with bounded concurrency, keeping every finished result."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from streamobs.probe.prober import run_probe
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec


def run_batch(
    spec: ProbeSpec,
    count: int,
    concurrency: int,
    on_result: Callable[[int, ProbeResult], None] | None = None,
    probe: Callable[[ProbeSpec], ProbeResult] = run_probe,
) -> list[ProbeResult]:
    """Results in completion order. On KeyboardInterrupt no new probe starts and the
    results finished so far are returned; workers are daemon threads, so a probe still in
    flight cannot hold the process open past its exit (its socket closes with it)."""
    if count < 1 or concurrency < 1:
        raise ValueError("count and concurrency must be at least 1")
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(count):
        todo.put(index)
    done: queue.SimpleQueue[tuple[int, ProbeResult]] = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            done.put((index, probe(spec)))

    workers = [
        threading.Thread(target=worker, name=f"probe-{n}", daemon=True)
        for n in range(min(count, concurrency))
    ]
    for thread in workers:
        thread.start()
    results: list[ProbeResult] = []
    try:
        while len(results) < count:
            try:
                index, result = done.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in workers) and done.empty():
                    break
                continue
            results.append(result)
            if on_result is not None:
                on_result(index, result)
    except KeyboardInterrupt:
        stop.set()
        raise BatchInterrupted(results) from None
    return results


class BatchInterrupted(Exception):
    """Ctrl-C during a batch; carries the results that had finished."""

    def __init__(self, results: list[ProbeResult]) -> None:
        super().__init__(f"interrupted after {len(results)} probes")
        self.results = results
