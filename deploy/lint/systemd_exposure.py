"""Fail when `systemd-analyze security --offline=true` rates a unit's exposure above a bound.

systemd scores a unit from 0.0 (fully locked down) to 10.0 (fully exposed). Missing
systemd-analyze is an error when CI is set, otherwise a named skip.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?) (\w+)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=float, required=True, help="highest exposure allowed")
    parser.add_argument("units", nargs="+")
    args = parser.parse_args(argv)
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            print("FAIL systemd-analyze is not installed (Debian package: systemd)")
            return 1
        print("SKIP systemd exposure: systemd-analyze is not installed (a failure when CI is set)")
        return 0
    failed = 0
    for unit in args.units:
        proc = subprocess.run(
            [tool, "security", "--offline=true", "--no-pager", unit],
            capture_output=True,
            text=True,
        )
        found = OVERALL.search(proc.stdout)
        if found is None:
            print(f"FAIL {unit}: no exposure level in systemd-analyze's output")
            print(proc.stdout[-2000:] + proc.stderr[-2000:])
            failed += 1
            continue
        exposure = float(found.group(2))
        verdict = "PASS" if exposure <= args.max else "FAIL"
        failed += verdict == "FAIL"
        print(f"{verdict} {unit}: exposure {exposure} {found.group(3)} (at most {args.max})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
