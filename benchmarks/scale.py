"""Scale: `streamobs run` with 1 / 10 / 100 / 1,000 targets of short probes against the
simulator (its own process): CPU per probe, RSS, threads, /metrics time and size, reload.

Two tables: the probes alone (collectors off), and the same with the collectors on: one
vLLM engine per ``TARGETS_PER_ENGINE`` targets (1,000 targets over 100 engines), each
engine's /metrics the real 50 KB vLLM capture served from a loopback process
(``engine_server``), scraped and re-exposed; and the GPU collector reading 8 cards from
an NVML stand-in (``nvml_double``: the machine has no GPU).

python -m benchmarks.scale                 # both tables, written into README.md
python -m benchmarks.scale --quick         # shorter windows
python -m benchmarks.scale --no-readme     # print only
python -m benchmarks.scale --collectors on # one table only (off / on)
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.engine_server import engine_server
from benchmarks.footprint import _cpu_seconds, _peak_rss_mb
from benchmarks.net import free_port
from benchmarks.timing import simulator_process

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench-scale:start -->", "<!-- bench-scale:end -->"
SIZES = (1, 10, 100, 1000)
INTERVAL = 15.0
POOL = 16
SCRAPE_EVERY = 2.0  # our /metrics fetched this often through the window (p99 needs many)
TARGETS_PER_ENGINE = 10
GPUS = 8
# The vLLM capture vendored for the tests, read as data: benchmarks import nothing from tests.
VLLM_TEXT = ROOT / "tests" / "data" / "vllm-0.32-cpu" / "metrics.txt"
# The goals of DESIGN.md, "Performance targets", and of the scale issue.
GOAL_METRICS_S = {1000: 1.0}  # 1,000 targets: /metrics within 1 s
GOAL_METRICS_SMALL_S = 0.020  # 8 targets: under 20 ms (the 1- and 10-target rows here)
GOAL_RSS_MB = 300.0  # at 1,000 targets
GOAL_RELOAD_S = 2.0  # at 1,000 targets


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
    metrics_p99_ms: float
    metrics_gets: int
    metrics_bytes: int
    reload_ms: float  # median of the reloads
    series_kept: bool  # every unchanged target's series still there after the reloads
    collectors: bool = False
    engines: int = 0
    reexpose: bool = True  # the engines' own series re-exposed (collectors on)
    load: float = 0.0  # 1-minute load average at the end of the window


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


def engine_count(targets: int) -> int:
    return -(-targets // TARGETS_PER_ENGINE)


def _config(
    url: str,
    port: int,
    targets: int,
    extra: int = 0,
    engines_url: str | None = None,
    reexpose: bool = True,
) -> dict[str, Any]:
    """Collectors off unless ``engines_url`` is given: then target i is served by engine
    i // TARGETS_PER_ENGINE at ``<engines_url>/e<n>/metrics``, and the GPU collector is on."""
    config: dict[str, Any] = {
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
    if engines_url is not None:
        config["collectors"] = {
            "engines": {"enabled": True, "reexpose": reexpose},
            "gpu": {"enabled": True},
        }
        config["engines"] = [
            {"name": f"e{n}", "metrics_url": f"{engines_url}/e{n}/metrics", "kind": "vllm",
             "interval": f"{INTERVAL:.0f}s"}
            for n in range(engine_count(targets))
        ]  # fmt: skip
        for i, target in enumerate(config["targets"]):
            target["engine"] = f"e{min(i // TARGETS_PER_ENGINE, engine_count(targets) - 1)}"
    return config


def _collectors_up(text: str) -> tuple[int, bool]:
    """(engines up, GPU collector up) from our /metrics."""
    engines, gpu = 0, False
    for line in text.splitlines():
        if not line.startswith("streamobs_collector_up{"):
            continue
        labels, value = line.rsplit(" ", 1)
        if float(value) != 1.0:
            continue
        if 'collector="vllm"' in labels:
            engines += 1
        elif 'collector="gpu"' in labels:
            gpu = True
    return engines, gpu


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


@contextmanager
def _engines(collectors: bool) -> Iterator[str | None]:
    if not collectors:
        yield None
        return
    with engine_server(VLLM_TEXT) as url:
        yield url


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(
    targets: int,
    seconds: float,
    reloads: int = 3,
    collectors: bool = False,
    reexpose: bool = True,
) -> Scale:
    engines = engine_count(targets) if collectors else 0
    with (
        simulator_process(ttft=0.005, itl=0.001) as url,
        _engines(collectors) as engines_url,
        tempfile.TemporaryDirectory() as folder,
    ):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        path = Path(folder) / "streamobs.yml"
        initial = _config(url, port, targets, engines_url=engines_url, reexpose=reexpose)
        path.write_text(yaml.safe_dump(initial))
        # With the GPU collector on, the daemon reads the NVML stand-in (no GPU here).
        command = (
            ["-m", "benchmarks.nvml_double", "--gpus", str(GPUS)]
            if collectors
            else ["-m", "streamobs"]
        )
        proc = subprocess.Popen(
            [sys.executable, *command, "run", "--config", str(path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Start-up is not steady state: wait until every target has been probed once
            # (and, collectors on, every engine scraped and the GPUs read).
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    text = _get_metrics(base)[1].decode()
                except requests.RequestException:
                    text = ""
                seen = _attempts(text)
                up, gpu = _collectors_up(text)
                probed = len([v for v in seen.values() if v >= 1]) >= targets
                if probed and (not collectors or (up >= engines and gpu)):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"{targets} targets: the daemon exited ({proc.returncode})")
                time.sleep(0.5)
            else:
                raise RuntimeError(
                    f"{targets} targets: not all probed (or engines up, GPUs read) within 180 s"
                )
            time.sleep(2)
            cpu0, wall0 = _cpu_seconds(proc.pid), time.monotonic()
            probes0 = sum(_attempts(_get_metrics(base)[1].decode()).values())
            cpu_metrics = 0.0
            times: list[float] = []
            body = b""
            threads = 0
            # A scrape every SCRAPE_EVERY seconds through the window: more than a Prometheus
            # would, so the p99 stands on enough of them.
            while time.monotonic() - wall0 < seconds:
                time.sleep(min(SCRAPE_EVERY, max(0.0, seconds - (time.monotonic() - wall0))))
                before = _cpu_seconds(proc.pid)
                took, body = _get_metrics(base)
                cpu_metrics += _cpu_seconds(proc.pid) - before
                times.append(took)
                threads = max(threads, _threads(proc.pid))
            cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
            load = os.getloadavg()[0]
            probes1 = sum(_attempts(body.decode()).values())
            probes = int(probes1 - probes0)
            rss = _rss_mb(proc.pid)
            if collectors:
                up, gpu = _collectors_up(body.decode())
                if up < engines or not gpu:
                    raise RuntimeError(
                        f"{targets} targets: {up} of {engines} engines up, GPU up: {gpu}"
                    )
            # Reload: the same targets plus one, then back; unchanged ones keep counting.
            reload_times = []
            for i in range(reloads):
                config = _config(
                    url, port, targets, (i + 1) % 2, engines_url=engines_url, reexpose=reexpose
                )
                path.write_text(yaml.safe_dump(config))
                started = time.perf_counter()
                response = requests.post(base + "/-/reload", timeout=60)
                reload_times.append(time.perf_counter() - started)
                response.raise_for_status()
            text_after = _get_metrics(base)[1].decode()
            after = _attempts(text_after)
            before_reload = _attempts(body.decode())
            kept = all(after.get(name, -1) >= count for name, count in before_reload.items())
            if collectors:
                up, gpu = _collectors_up(text_after)
                kept = kept and up >= engines and gpu
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
        metrics_p99_ms=1000 * _quantile(times, 0.99),
        metrics_gets=len(times),
        metrics_bytes=len(body),
        reload_ms=1000 * statistics.median(reload_times),
        series_kept=kept,
        collectors=collectors,
        engines=engines,
        reexpose=reexpose,
        load=load,
    )


def rows(
    sizes: Sequence[int], quick: bool, collectors: Sequence[bool] = (False, True)
) -> list[Scale]:
    """Every size with the collectors off, then every size with them on (as asked); with
    them on, the largest size once more without re-exposing the engines' own series."""
    seconds = 30.0 if quick else 60.0
    out = [measure(n, seconds, collectors=on) for on in collectors for n in sizes]
    if True in collectors and sizes:
        out.append(measure(max(sizes), seconds, collectors=True, reexpose=False))
    return out


_HEADER = [
    "| targets | engines | window | probes | CPU per probe | CPU | RSS (peak) | threads "
    "| /metrics p50 | /metrics p99 | /metrics size | reload | kept | load |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
    "| ---: |",
]


def _row(r: Scale) -> str:
    return (
        f"| {r.targets:,} | {_engines_cell(r)} | {r.seconds:.0f} s "
        f"| {r.probes:,} | {r.cpu_ms_per_probe:.2f} ms | {r.cpu_percent:.1f} % "
        f"| {r.rss_mb:.0f} MB ({r.peak_rss_mb:.0f} MB) | {r.threads} "
        f"| {_ms(r.metrics_ms)} | {_ms(r.metrics_p99_ms)} | {r.metrics_bytes / 1024:,.0f} KiB "
        f"| {r.reload_ms:,.0f} ms | {'yes' if r.series_kept else 'NO'} | {r.load:.2f} |"
    )


def _engines_cell(r: Scale) -> str:
    if not r.collectors:
        return "-"
    return f"{r.engines:,}" if r.reexpose else f"{r.engines:,}, not re-exposed"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def goals(results: Sequence[Scale]) -> list[str]:
    """One line per row that a goal of DESIGN.md's performance targets applies to: each
    figure against its goal, met or missed."""
    out = []
    for r in results:
        which = "collectors off"
        if r.collectors:
            which = "collectors on" if r.reexpose else "collectors on, not re-exposed"
        checks: list[tuple[str, bool]] = []  # (figure against its goal, met)
        if r.targets >= 1000:
            checks += [
                (f"/metrics p99 {_ms(r.metrics_p99_ms)} (goal {GOAL_METRICS_S[1000]:g} s)",
                 r.metrics_p99_ms <= 1000 * GOAL_METRICS_S[1000]),
                (f"peak RSS {r.peak_rss_mb:.0f} MB (goal {GOAL_RSS_MB:.0f} MB)",
                 r.peak_rss_mb <= GOAL_RSS_MB),
                (f"reload {_ms(r.reload_ms)} (goal {GOAL_RELOAD_S:g} s)",
                 r.reload_ms <= 1000 * GOAL_RELOAD_S),
            ]  # fmt: skip
        elif r.targets <= 10:
            goal = 1000 * GOAL_METRICS_SMALL_S
            checks.append(
                (f"/metrics p99 {_ms(r.metrics_p99_ms)} (goal for 8 targets: under {goal:.0f} ms)",
                 r.metrics_p99_ms < goal)
            )  # fmt: skip
        if checks:
            said = "; ".join(f"{figure} {'met' if met else '**missed**'}" for figure, met in checks)
            noun = "target" if r.targets == 1 else "targets"
            out.append(f"- {r.targets:,} {noun}, {which}: {said}")
    return out


def table(results: Sequence[Scale]) -> str:
    off = [r for r in results if not r.collectors]
    on = [r for r in results if r.collectors]
    lines = [
        f"Scale, measured {datetime.date.today().isoformat()} on {_machine()}; *load*: the "
        "1-minute load average at the end of each row's window (other work shared the "
        "machine). `streamobs run`, every target "
        f"probed every {INTERVAL:.0f} s (4 tokens from the simulator, in its own process), "
        f"`max_concurrency: {POOL}`; our /metrics fetched every {SCRAPE_EVERY:g} s through "
        "the window, p50 and p99 over those fetches. CPU per probe leaves out the /metrics "
        "renders but carries the daemon's idle cost too, and with the collectors on their "
        "scrapes (so it falls as targets grow); CPU "
        "is of one core, over the whole window; threads: the most seen (the web server's 32 "
        "and the probe pool among them). Reload: `POST /-/reload` of the same targets plus "
        "or minus one (median of 3); *kept*: no unchanged target's series dropped or reset "
        "(collectors on: every engine and the GPU collector up after it too).",
    ]
    if off:
        lines += ["", "Collectors off (probes only):", "", *_HEADER, *map(_row, off)]
    if on:
        lines += [
            "",
            f"Collectors on: one vLLM engine per {TARGETS_PER_ENGINE} targets, each "
            "scraped every 15 s and re-exposed (`kind: vllm`; its /metrics the 50 KB "
            "vLLM 0.32 capture, served by a loopback process standing in for them all); the "
            f"GPU collector reading {GPUS} H100-shaped cards every 10 s from an NVML "
            "stand-in (`benchmarks/nvml_double.py`; no GPU on this machine). The last row: "
            "the same with `collectors.engines.reexpose: false` (only the normalised "
            "`streamobs_engine_*` series).",
            "",
            *_HEADER,
            *map(_row, on),
        ]
    verdicts = goals(results)
    if verdicts:
        lines += ["", "Against DESIGN.md's performance targets:", "", *verdicts]
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
    parser.add_argument(
        "--collectors",
        choices=("off", "on", "both"),
        default="both",
        help="which table (the README is only written with both)",
    )
    args = parser.parse_args(argv)
    which = {"off": (False,), "on": (True,), "both": (False, True)}[args.collectors]
    text = table(rows(args.targets, args.quick, which))
    print(text)
    if not args.no_readme and args.collectors == "both":
        write_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
