"""Footprint: `streamobs run` with the default config probing N targets every 15 s and
scraping their vLLM-shaped /metrics; average CPU and peak RSS of the daemon process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from benchmarks.net import free_port
from benchmarks.timing import simulator_process

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Footprint:
    targets: int
    seconds: float
    cpu_percent: float  # of one core
    peak_rss_mb: float
    probes: int


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(targets: int, seconds: float, interval: str = "15s") -> Footprint:
    with simulator_process() as url, tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = {
            "web": {"listen_address": f"127.0.0.1:{port}"},
            "targets": [
                {"name": f"t{i}", "url": url, "interval": interval, "jitter": "1s"}
                for i in range(targets)
            ],
        }
        path = Path(folder) / "streamobs.yml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamobs", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(5)  # imports and the first probes are start-up, not steady state
            cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            probes = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("streamobs_probe_attempts_total{")
            )
            rss = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
    return Footprint(
        targets, wall1 - wall0, 100 * (cpu1 - cpu0) / (wall1 - wall0), rss, int(probes)
    )
