"""`make test-under-load`: the suite while every core is kept busy.

Starts one busy-looping process per core this process may run on, runs pytest, and stops
the loopers when pytest ends. Each looper also ends by itself at the hard limit, or as soon
as the runner that started it is gone (even killed with SIGKILL), so none outlives a crashed
run. The exit code is pytest's; a run during which a looper stopped early (the load was not
there all along) fails.

    python -m tests.under_load [--limit SECONDS] [-- pytest arguments]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

# Checks its parent and the clock every 200k iterations (some milliseconds), busy otherwise.
LOOP = """
import os, sys, time
parent, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
n = 0
while True:
    n += 1
    if n % 200_000 == 0 and (os.getppid() != parent or time.monotonic() >= end):
        break
"""
DEFAULT_LIMIT_S = 40 * 60  # CI allows 90 minutes for everything; the suite takes about 5


def cores() -> int:
    return len(os.sched_getaffinity(0))


def start_loopers(count: int, limit_s: float) -> list[subprocess.Popen[bytes]]:
    """``count`` busy loops, each ending after ``limit_s`` or when this process is gone."""
    command = [sys.executable, "-c", LOOP, str(os.getpid()), str(limit_s)]
    return [subprocess.Popen(command, stdin=subprocess.DEVNULL) for _ in range(count)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def run_pytest(args: list[str], limit_s: float) -> int:
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", *args])
    try:
        return pytest.wait(limit_s)
    except subprocess.TimeoutExpired:
        print(f"under_load: pytest still running after {limit_s:.0f} s, stopped", flush=True)
        pytest.send_signal(signal.SIGTERM)
        try:
            pytest.wait(15)
        except subprocess.TimeoutExpired:
            pytest.kill()
            pytest.wait()
        return 1
    finally:
        if pytest.poll() is None:  # interrupted (Ctrl-C): pytest got the signal too
            pytest.kill()
            pytest.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT_S, help="hard limit, s")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    options = parser.parse_args(argv)
    count = cores()
    print(f"under_load: {count} busy loops on {count} cores, at most {options.limit:.0f} s")
    sys.stdout.flush()
    started = time.monotonic()
    loopers = start_loopers(count, options.limit + 30)
    try:
        code = run_pytest(options.pytest_args, options.limit)
        ended_early = [p.pid for p in loopers if p.poll() is not None]
    finally:
        stop(loopers)
    if ended_early:
        took = time.monotonic() - started
        print(f"under_load: busy loops {ended_early} ended before the suite did ({took:.0f} s)")
        return code or 1
    return code  # pytest's own summary stays the last line of a run


if __name__ == "__main__":
    sys.exit(main())
