"""`make bench`: every benchmark, one table, written into the README with date and machine,
then the scale table (``python -m benchmarks.scale`` runs that one alone).

python -m benchmarks                      # full run (about 50 minutes on 2 cores)
python -m benchmarks --quick              # shorter windows, same tables (a smoke run)
python -m benchmarks.timing               # the timing table alone, printed
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import ssl
import sys
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from prometheus_client import disable_created_metrics

from benchmarks import scale
from benchmarks.expose import parse_and_expose, render_eight_targets
from benchmarks.footprint import measure
from benchmarks.timing import run_fidelity, timing_table

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
    return f"{cpu}, nproc {len(os.sched_getaffinity(0))}, {system}"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def clients() -> str:
    return (
        f"openai {_version('openai')}, aiohttp {_version('aiohttp')}, "
        f"requests {_version('requests')}, {ssl.OPENSSL_VERSION}"
    )


def timing_section(quick: bool) -> str:
    return timing_table(run_fidelity((1, 16, 64), rounds=2 if quick else 8))


def footprint_section(quick: bool) -> str:
    lines = [
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
    return "\n".join(lines)


def parse_section(quick: bool) -> str:
    lines = [
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


SECTIONS: dict[str, Callable[[bool], str]] = {
    "timing": timing_section,
    "footprint": footprint_section,
    "parse and expose": parse_section,
}


def table(quick: bool) -> tuple[str, list[str]]:
    """The README block, and the sections that failed (each still says so in the block).
    Every section is printed as soon as it is done, so a later failure loses nothing."""
    started = datetime.datetime.now(datetime.timezone.utc)
    head = (
        f"Measured {started:%Y-%m-%d %H:%M} UTC{' (`--quick`)' if quick else ''} on "
        f"{machine()}; clients {clients()}; load average {os.getloadavg()[0]:.2f} when the "
        "run began (other work shares the machine: see *others* below)."
    )
    print(head, flush=True)
    parts, failed = [head], []
    for name, section in SECTIONS.items():
        try:
            text = section(quick)
        except Exception as exc:  # said in the block and on stderr; the run goes on
            failed.append(name)
            text = f"*{name}: not measured in this run ({type(exc).__name__}: {exc}).*"
            traceback.print_exc()
        print(f"\n{text}", flush=True)
        parts.append(text)
    return "\n\n".join(parts), failed


def main() -> int:
    parser = argparse.ArgumentParser(description="streamobs benchmarks")
    parser.add_argument("--quick", action="store_true", help="shorter windows")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument(
        "--no-scale", action="store_true", help="leave out the scale table (its own run)"
    )
    args = parser.parse_args()
    # As `streamobs run` does: /metrics is timed the way the daemon serves it.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    text, failed = table(args.quick)
    if not args.no_readme:
        readme = README.read_text()
        block = f"{START}\n{text}\n{END}"
        if START in readme:
            readme = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: block, readme,
                            flags=re.S)  # fmt: skip
        else:
            readme += f"\n## Benchmarks\n\n`make bench` writes the last run here.\n\n{block}\n"
        README.write_text(readme)
    if not args.no_scale:
        scaled = scale.table(scale.rows(scale.SIZES, args.quick))
        print(scaled)
        if not args.no_readme:
            scale.write_readme(scaled, README)
    if failed:
        print(f"benchmarks: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
