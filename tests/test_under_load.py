"""The load runner (`make test-under-load`): its exit code is pytest's, and no busy loop
outlives it, whether it ends normally, reaches its limit or is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import ROOT
from tests.under_load import main, start_loopers, stop


def ended(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet: either way no longer running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_ended(pid: int, deadline_s: float = 60.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if ended(pid):
            return True
        time.sleep(0.05)
    return ended(pid)


def test_a_looper_ends_by_itself_at_its_limit() -> None:
    [looper] = start_loopers(1, 0.2)
    try:
        assert looper.wait(60) == 0
    finally:
        stop([looper])


def test_a_looper_ends_when_its_runner_is_killed() -> None:
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from tests.under_load import start_loopers\n"
            "print(start_loopers(1, 600)[0].pid, flush=True)\n"
            "sys.stdin.read()\n",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert runner.stdout is not None
    looper = int(runner.stdout.readline())
    try:
        assert not ended(looper)  # running while its runner is there
        runner.send_signal(signal.SIGKILL)
        runner.wait(60)
        assert wait_ended(looper)
    finally:
        if not ended(looper):
            os.kill(looper, signal.SIGKILL)
        runner.kill()
        runner.wait()


@pytest.mark.parametrize(("body", "code"), [("assert True", 0), ("assert False", 1)])
def test_the_exit_code_is_pytests(tmp_path: Path, body: str, code: int) -> None:
    test = tmp_path / "test_one.py"
    test.write_text(f"def test_one() -> None:\n    {body}\n")
    args = ["-q", "-c", os.devnull, "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
    assert main(["--limit", "120", "--", *args, str(test)]) == code


def test_pytest_is_stopped_at_the_limit(tmp_path: Path) -> None:
    test = tmp_path / "test_slow.py"
    test.write_text("import time\n\ndef test_slow() -> None:\n    time.sleep(600)\n")
    args = ["-q", "-c", os.devnull, "--rootdir", str(tmp_path), "-p", "no:cacheprovider"]
    assert main(["--limit", "2", "--", *args, str(test)]) == 1
