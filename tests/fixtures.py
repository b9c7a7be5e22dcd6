"""Where the byte-exact vLLM captures live (vendored under tests/data, see its README.md)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

_T = TypeVar("_T")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "vllm-0.32-cpu"


def require_binary(name: str, *candidates: str) -> str:
    """Path of a real component; in CI a missing one fails the test instead of skipping it."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (
            candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None
        )
        if found:
            return found
    message = f"{name} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers started as subprocesses)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds (no fixed sleeps in tests), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m streamobs ARGS`` as a user runs it, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streamobs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def settled(ask: Callable[[], _T], inconclusive: Callable[[_T], bool], tries: int = 5) -> _T:
    """A doctor's answer, asked again while it is inconclusive (what the doctor says when it
    read too late to tell, on a loaded machine): a settled answer, right or wrong, is
    returned at once, so a wrong verdict still fails the test."""
    answer = ask()
    for _ in range(tries - 1):
        if not inconclusive(answer):
            break
        answer = ask()
    return answer
