"""Scale: `streamobs run` with 1 / 10 / 100 / 1,000 targets of short probes against the
simulator (its own process): CPU per probe, RSS, threads, /metrics time and size, reload.

python -m benchmarks.scale                 # the table, written into README.md
python -m benchmarks.scale --quick         # shorter windows
python -m benchmarks.scale --no-readme     # print only
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.footprint import _cpu_seconds, _peak_rss_mb
from benchmarks.net import free_port
from benchmarks.timing import simulator_process

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- bench-scale:start -->", "<!-- bench-scale:end -->"
SIZES = (1, 10, 100, 1000)
INTERVAL = 15.0
POOL = 16


@dataclass(frozen=True)
class Scale:
    targets: int
    seconds: float
    probes: int
    cpu_ms_per_probe: float
    cpu_percent: float  # of one core, over the window
    rss_mb: float
    peak_rss_mb: float
    threads: int
    metrics_ms: float  # median of the GETs
    metrics_bytes: int
    reload_ms: float  # median of the reloads
    series_kept: bool  # every unchanged target's series still there after the reloads


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def _config(url: str, port: int, targets: int, extra: int = 0) -> dict[str, Any]:
    return {
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "max_concurrency": POOL,
        "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
        "targets": [
            {
                "name": f"t{i}",
                "url": url,
                "model": "sim",
                "interval": f"{INTERVAL:.0f}s",
                "jitter": "1s",
                "max_tokens": 4,
            }
            for i in range(targets + extra)
        ],
    }


def _attempts(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamobs_probe_attempts_total{"):
            labels, value = line.rsplit(" ", 1)
            target = labels.split('target="', 1)[1].split('"', 1)[0]
            out[target] = out.get(target, 0.0) + float(value)
    return out


def _get_metrics(base: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = requests.get(base + "/metrics", timeout=30)
    response.raise_for_status()
    return time.perf_counter() - started, response.content


def measure(targets: int, seconds: float, reloads: int = 3) -> Scale:
    with simulator_process(ttft=0.005, itl=0.001) as url, tempfile.TemporaryDirectory() as folder:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        path = Path(folder) / "streamobs.yml"
        path.write_text(yaml.safe_dump(_config(url, port, targets)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamobs", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Start-up is not steady state: wait until every target has been probed once.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    seen = _attempts(_get_metrics(base)[1].decode())
                except requests.RequestException:
                    seen = {}
                if len([v for v in seen.values() if v >= 1]) >= targets:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"{targets} targets: not all probed within 120 s")
            time.sleep(2)
            cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
            probes0 = sum(_attempts(_get_metrics(base)[1].decode()).values())
            cpu_metrics = 0.0
            times: list[float] = []
            body = b""
            threads = 0
            # A scrape every 5 s through the window, as a fast Prometheus would.
            while time.monotonic() - wall0 < seconds:
                time.sleep(min(5.0, max(0.0, seconds - (time.monotonic() - wall0))))
                before = _cpu_seconds(proc.pid)
                took, body = _get_metrics(base)
                cpu_metrics += _cpu_seconds(proc.pid) - before
                times.append(took)
                threads = max(threads, _threads(proc.pid))
            cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
            probes1 = sum(_attempts(body.decode()).values())
            probes = int(probes1 - probes0)
            rss = _rss_mb(proc.pid)
            # Reload: the same targets plus one, then back; unchanged ones keep counting.
            reload_times = []
            for i in range(reloads):
                path.write_text(yaml.safe_dump(_config(url, port, targets, extra=(i + 1) % 2)))
                started = time.perf_counter()
                response = requests.post(base + "/-/reload", timeout=60)
                reload_times.append(time.perf_counter() - started)
                response.raise_for_status()
            after = _attempts(_get_metrics(base)[1].decode())
            before_reload = _attempts(body.decode())
            kept = all(after.get(name, -1) >= count for name, count in before_reload.items())
            peak = _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    window = wall1 - wall0
    # The CPU of the /metrics renders is reported apart (the /metrics column), not per probe.
    probe_cpu = max(0.0, cpu1 - cpu0 - cpu_metrics)
    return Scale(
        targets=targets,
        seconds=window,
        probes=probes,
        cpu_ms_per_probe=1000 * probe_cpu / probes if probes else float("nan"),
        cpu_percent=100 * (cpu1 - cpu0) / window,
        rss_mb=rss,
        peak_rss_mb=peak,
        threads=threads,
        metrics_ms=1000 * statistics.median(times),
        metrics_bytes=len(body),
        reload_ms=1000 * statistics.median(reload_times),
        series_kept=kept,
    )


def rows(sizes: Sequence[int], quick: bool) -> list[Scale]:
    return [measure(n, 30.0 if quick else 60.0) for n in sizes]


def table(results: Sequence[Scale]) -> str:
    lines = [
        f"Scale, measured {datetime.date.today().isoformat()} on {_machine()}; load average "
        f"{os.getloadavg()[0]:.2f} when the table was written. `streamobs run`, every target "
        f"probed every {INTERVAL:.0f} s (4 tokens from the simulator, in its own process), "
        f"`max_concurrency: {POOL}`, collectors off; /metrics fetched every 5 s through "
        "the window. CPU per probe leaves out the /metrics renders but carries the daemon's "
        "idle cost too (so it falls as targets grow); CPU is of one core, over the whole "
        "window; threads: the most seen (the web server's 32 and the probe pool among them). "
        "Reload: `POST /-/reload` of the same targets plus or minus one "
        "(median of 3); *kept*: no unchanged target's series dropped or reset.",
        "",
        "| targets | window | probes | CPU per probe | CPU | RSS (peak) | threads "
        "| /metrics | /metrics size | reload | kept |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.targets:,} | {r.seconds:.0f} s | {r.probes:,} | {r.cpu_ms_per_probe:.2f} ms "
            f"| {r.cpu_percent:.1f} % | {r.rss_mb:.0f} MB ({r.peak_rss_mb:.0f} MB) | {r.threads} "
            f"| {r.metrics_ms:.1f} ms | {r.metrics_bytes / 1024:,.0f} KiB | {r.reload_ms:.0f} ms "
            f"| {'yes' if r.series_kept else 'NO'} |"
        )
    return "\n".join(lines)


def _machine() -> str:
    from benchmarks.__main__ import machine

    return machine()


def write_readme(text: str, readme: Path = README) -> None:
    """Put ``text`` between the scale markers, inside the Benchmarks section."""
    content = readme.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in content:
        content = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, content,
                         flags=re.S)  # fmt: skip
    else:
        bench_end = "<!-- bench:end -->"
        if bench_end in content:
            content = content.replace(bench_end, f"{bench_end}\n\n{block}", 1)
        else:
            content += f"\n{block}\n"
    readme.write_text(content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="streamobs scale benchmark")
    parser.add_argument("--quick", action="store_true", help="30 s windows instead of 60 s")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument(
        "--targets", type=int, nargs="*", default=list(SIZES), help="target counts to run"
    )
    args = parser.parse_args(argv)
    text = table(rows(args.targets, args.quick))
    print(text)
    if not args.no_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
