"""The daemon's whole /metrics for fixed inputs equals a checked-in file; promtool agrees.

Inputs: the real vLLM 0.32 capture as the target's scrape, and scripted probe results.
Set STREAMOBS_UPDATE_GOLDEN=1 to rewrite the file after a deliberate change.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import disable_created_metrics, enable_created_metrics

from streamobs.collectors.engines import snapshot_from_text
from streamobs.config import parse_config
from streamobs.daemon import Runtime
from streamobs.probe.result import Delivery, Outcome, ProbeResult
from tests.fixtures import FIXTURES, require_binary

GOLDEN = Path(__file__).parent / "golden" / "metrics-daemon.txt"
MS = 1_000_000


def result(outcome: Outcome, **fields: object) -> ProbeResult:
    base: dict[str, object] = {
        "url": "http://127.0.0.1:8000/v1/chat/completions",
        "endpoint": "chat",
        "model": "tiny",
        "outcome": outcome,
        "start_ns": 0,
        "started_at": 1_795_635_800.0,
    }
    return ProbeResult(**{**base, **fields})  # type: ignore[arg-type]


SCRIPTED = [
    result(
        Outcome.OK,
        connect_ns=1 * MS,
        headers_ns=3 * MS,
        first_event_ns=180 * MS,
        first_token_ns=180 * MS,
        last_token_ns=480 * MS,
        done_ns=481 * MS,
        end_ns=481 * MS,
        token_arrivals_ns=tuple(180 * MS + i * 20 * MS for i in range(16)),
        output_tokens=16,
        output_tokens_source="usage",
        content_events=16,
        events=19,
        delivery=Delivery(19, 19, 1.0, 1, 0.0, False),
        http_status=200,
    ),
    result(
        Outcome.OK,
        headers_ns=2 * MS,
        first_token_ns=2_400 * MS,
        last_token_ns=2_401 * MS,
        done_ns=2_402 * MS,
        end_ns=2_402 * MS,
        token_arrivals_ns=(2_400 * MS, 2_400 * MS + 10_000, 2_401 * MS),
        output_tokens=3,
        output_tokens_source="usage",
        content_events=3,
        delivery=Delivery(1, 1, 5.0, 3, 1.0, False),
        http_status=200,
    ),
    result(Outcome.STREAM_ERROR, headers_ns=2 * MS, first_token_ns=150 * MS, http_status=200),
    result(Outcome.CONNECT, started_at=1_795_635_815.0),
]


@pytest.fixture
def no_created_series() -> Iterator[None]:
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


def render() -> str:
    config = parse_config(
        {
            "targets": [{"name": "vllm", "url": "http://127.0.0.1:8000", "model": "tiny"}],
            # Not started here: the GPU collector shows as not yet sampled, so down.
            "collectors": {"gpu": {"enabled": True}},
        }
    )
    runtime = Runtime(config, probe=lambda spec: SCRIPTED[0], discover=lambda *a: "tiny")
    target = config.targets[0]
    assert runtime.engines is not None
    snapshot = snapshot_from_text(
        (FIXTURES / "metrics.txt").read_text(),
        url="http://127.0.0.1:8000/metrics",
        duration_seconds=0.0125,
        scraped_at=1_795_635_800.0,
    )
    runtime.engines.accept(target.name, snapshot)
    for scripted in SCRIPTED:
        runtime.metrics.record(target.name, scripted)
    return runtime.render().decode()


def test_full_metrics_output_matches_golden(no_created_series: None) -> None:
    text = render()
    if os.environ.get("STREAMOBS_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def test_golden_passes_promtool_check_metrics() -> None:
    text = GOLDEN.read_text()
    ours = "".join(
        line for line in text.splitlines(keepends=True)
        if not line.startswith(("vllm:", "# HELP vllm:", "# TYPE vllm:"))
    )  # fmt: skip
    strict = promtool_check(ours)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    # The whole text parses; promtool's only remarks are on vLLM's own names (colons,
    # a histogram ending in _total), which are re-exposed unchanged on purpose.
    full = promtool_check(text)
    remarks = [line for line in (full.stdout + full.stderr).splitlines() if line.strip()]
    assert "error while linting" not in full.stderr
    assert remarks and all(line.startswith("vllm:") for line in remarks), remarks


def test_golden_holds_every_kind_of_series() -> None:
    text = GOLDEN.read_text()
    for needle in (
        'streamobs_probe_ttft_seconds_bucket{le="2.0",model="tiny",target="vllm"} 1.0',
        'streamobs_probe_failures_total{model="tiny",outcome="stream_error",target="vllm"} 1.0',
        'streamobs_probe_attempts_total{model="tiny",target="vllm"} 4.0',
        'streamobs_collector_up{collector="vllm",target="vllm"} 1.0',
        'vllm:generation_tokens_total{engine="0",model_name="tiny"} 1604.0',
        'streamobs_engine_generation_tokens_total{engine="vllm",engine_index="0",kind="vllm",'
        'model="tiny"} 1604.0',
    ):
        assert needle in text, needle
