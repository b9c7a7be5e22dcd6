"""`make bench`: every benchmark, one table, written into the README with date and machine.

python -m benchmarks                      # full run (about 20 minutes)
python -m benchmarks --quick              # shorter windows, same table
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
from pathlib import Path

from benchmarks.expose import parse_and_expose, render_eight_targets
from benchmarks.footprint import measure
from benchmarks.timing import run_fidelity

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"Linux {platform.release()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}"


def table(quick: bool) -> str:
    rounds = 2 if quick else 8
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {machine()}.",
        "",
        "| timing error vs the simulator's write stamps | streams "
        "| TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TTFT p99 vs best baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fidelity = run_fidelity((1, 16, 64), rounds=rounds)
    for r in fidelity:
        baselines = [
            b.ttft_p99_ms for b in fidelity if b.streams == r.streams and b.client != "streamobs"
        ]
        ratio = f"{r.ttft_p99_ms / min(baselines):.2f}x" if baselines else "-"
        lines.append(
            f"| {r.client} | {r.streams} | {r.ttft_p50_ms:.3f} ms | {r.ttft_p99_ms:.3f} ms "
            f"| {r.itl_p50_ms:.3f} ms | {r.itl_p99_ms:.3f} ms "
            f"| {ratio if r.client == 'streamobs' else ''} |"
        )
    lines += [
        "",
        "| footprint: `streamobs run`, 15 s interval, vLLM scraped | window "
        "| CPU (one core) | peak RSS | probes |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    windows = {1: 60, 8: 30, 64: 30} if quick else {1: 600, 8: 120, 64: 120}
    for targets, seconds in windows.items():
        f = measure(targets, seconds)
        lines.append(
            f"| {targets} target(s) | {f.seconds:.0f} s | {f.cpu_percent:.2f} % "
            f"| {f.peak_rss_mb:.1f} MB | {f.probes} |"
        )
    lines += [
        "",
        "| parse and expose | median | baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    repeat = 5 if quick else 20
    for t in (
        parse_and_expose(50_000, repeat),
        parse_and_expose(1 << 20, max(3, repeat // 4)),
        render_eight_targets(repeat),
    ):
        ratio = f"{t.ratio:.2f}x" if t.ratio is not None else "-"
        baseline = f"{t.baseline_ms:.2f} ms" if t.baseline_ms is not None else "-"
        lines.append(f"| {t.name} | {t.median_ms:.2f} ms | {baseline} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="streamobs benchmarks")
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    args = parser.parse_args()
    text = table(args.quick)
    print(text)
    if not args.no_readme:
        readme = README.read_text()
        block = f"{START}\n{text}\n{END}"
        if START in readme:
            readme = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, readme,
                            flags=re.S)  # fmt: skip
        else:
            readme += f"\n## Benchmarks\n\n`make bench` writes the last run here.\n\n{block}\n"
        README.write_text(readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
