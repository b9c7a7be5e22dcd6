"""`streamobs run` with 200 targets against the simulator: every target probed on time,
threads bounded by the pool (not one per target), SIGTERM within the shutdown grace.

Timing checks are generous bounds meant to hold on a loaded 2-core machine; waits poll
with deadlines.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from streamobs.simulator import Simulator, SimulatorConfig
from streamobs.web.server import WORKERS as WEB_WORKERS
from tests.fixtures import free_port
from tests.prometheus_server import wait_until

TARGETS = 200
INTERVAL = 4.0
POOL = 8
GRACE = 2.0


@pytest.fixture(scope="module")
def fast() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.005, itl=0.001)) as sim:
        yield sim


@pytest.fixture(scope="module")
def slow() -> Iterator[Simulator]:
    # Its first token never comes in time: two workers stay busy, probes are in flight
    # when SIGTERM comes.
    with Simulator(SimulatorConfig(model="sim", ttft=60.0)) as sim:
        yield sim


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def last_runs(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamobs_probe_last_run_timestamp_seconds{"):
            labels, value = line.rsplit(" ", 1)
            target = labels.split('target="', 1)[1].split('"', 1)[0]
            out[target] = max(out.get(target, 0.0), float(value))
    return out


def test_two_hundred_targets_on_time_with_bounded_threads_and_a_prompt_sigterm(
    fast: Simulator, slow: Simulator, tmp_path: Path
) -> None:
    port = free_port()
    config = {
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "max_concurrency": POOL,
        "shutdown_grace": f"{GRACE:.0f}s",
        "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
        "targets": [
            {
                "name": f"t{i}",
                "url": slow.url if i < 2 else fast.url,
                "model": "sim",
                "interval": f"{INTERVAL:.0f}s",
                "jitter": "500ms",
                "max_tokens": 4,
            }
            for i in range(TARGETS)
        ],
    }
    path = tmp_path / "streamobs.yml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "streamobs.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        most_threads = 0

        def all_probed_twice() -> bool:
            nonlocal most_threads
            if proc.poll() is not None:
                raise AssertionError("streamobs exited:\n" + log_path.read_text()[-3000:])
            most_threads = max(most_threads, threads_of(proc.pid))
            try:
                runs = last_runs(port)
            except requests.RequestException:
                return False
            fast_ones = [f"t{i}" for i in range(2, TARGETS)]
            return (
                all(runs.get(t, 0) > 0 for t in fast_ones)
                and time.time() - min(runs[t] for t in fast_ones) < INTERVAL * 2
            )

        wait_until(all_probed_twice, 90, "every target probed")
        # Several looks over a few intervals: no target's last probe is older than two
        # intervals (the slow two time out at 30 s and are left out).
        for _ in range(4):
            time.sleep(INTERVAL / 2)
            now = time.time()
            runs = last_runs(port)
            most_threads = max(most_threads, threads_of(proc.pid))
            stale = {t: now - at for t, at in runs.items() if t not in ("t0", "t1")}
            assert len(stale) == TARGETS - 2
            oldest = max(stale, key=lambda t: stale[t])
            assert stale[oldest] <= 2 * INTERVAL, (oldest, stale[oldest])
        # The probe pool and its timer, the web server's fixed pool, the main thread and
        # a few of the runtime's own; 200 targets add none.
        assert most_threads <= POOL + 1 + WEB_WORKERS + 8, most_threads
        assert any(not r.complete for r in slow.records())  # probes in flight now
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE + 20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert elapsed < GRACE + 3.0, elapsed  # the grace, then out
    assert "Traceback" not in output
