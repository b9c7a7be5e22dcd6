"""`make demo`'s entry point: probe series on its /metrics, and a fault flag changes them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import requests

from streamobs.status import RECENT
from tests.fixtures import ROOT, free_port, require_binary
from tests.test_daemon import sample, wait_for


def test_demo_serves_probe_series_and_a_fault_flag_shows() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "demo", "--duration", "30", "--interval", "0.3",
         "--ttft", "0.05", "--itl", "0.005", "--max-tokens", "8",
         "--listen-address", f"127.0.0.1:{port}",
         "--fault", "error_event=1", "--fault-after", "2.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    labels = {"target": "demo", "model": "demo-model"}

    def metric(name: str, **extra: str) -> float:
        try:
            text = requests.get(url, timeout=2).text
        except requests.ConnectionError:
            return 0.0
        return sample(text, name, **labels, **extra) or 0.0

    try:
        wait_for(lambda: metric("streamobs_probe_ttft_seconds_count") >= 3, timeout=15)
        assert metric("streamobs_probe_failures_total", outcome="stream_error") == 0
        wait_for(
            lambda: metric("streamobs_probe_failures_total", outcome="stream_error") >= 2,
            timeout=15,
        )
        assert metric("streamobs_probe_success") == 0
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "TTFT" in out and "stream_error" in out


def test_demo_bad_fault_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamobs", "demo", "--fault", "meteor=1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unknown fault 'meteor'" in proc.stderr


def test_make_demo_passes_args_through() -> None:
    """``make demo ARGS="..."`` hands the flags to ``streamobs demo`` (the install step is
    taken as done: the test runs from the installed environment)."""
    make = require_binary("make")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    # The view is printed every 5 s in a pipe: views with the faults, then the last.
    args = (
        f"--duration 12 --interval 0.3 --ttft 0.02 --itl 0.002 --max-tokens 4 "
        f"--fault error_event=0.5 --fault-after 1 --listen-address 127.0.0.1:{port}"
    )
    proc = subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed",
         f"BIN={bin_dir}", "demo", f"ARGS={args}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"metrics: http://127.0.0.1:{port}/metrics" in proc.stdout
    assert "faults: {'p_error_event': 0.5}" in proc.stdout
    assert "stopped" in proc.stdout


def test_the_readme_says_how_many_probes_the_view_shows() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## `streamobs demo`", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"last (\d+) probes", section) == [str(RECENT)]
    assert 'make demo ARGS="' in section


def test_demo_shows_any_engine_kind() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "demo", "--duration", "30", "--interval", "0.3",
         "--ttft", "0.05", "--itl", "0.005", "--max-tokens", "8", "--engine", "trtllm",
         "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def generated() -> float:
        try:
            text = requests.get(url, timeout=2).text
        except requests.ConnectionError:
            return 0.0
        name = "streamobs_engine_generation_tokens_total"
        return sample(text, name, engine="demo", kind="trtllm", model="demo-model") or 0.0

    try:
        # TensorRT-LLM's text is at /prometheus/metrics, recognised as trtllm.
        wait_for(lambda: generated() > 0, timeout=20)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
