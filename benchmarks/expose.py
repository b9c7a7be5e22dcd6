"""Parse and expose: vLLM /metrics of 50 KB and 1 MB through streamobs' collector, against
prometheus_client's parser alone; and the render time of our /metrics with 8 targets."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamobs.collectors.engines import EngineExporter, snapshot_from_text
from streamobs.config import parse_config
from streamobs.daemon import Runtime
from streamobs.reference import sample_result

# The vLLM capture vendored for the tests, read as data: benchmarks import nothing from tests.
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "vllm-0.32-cpu"


@dataclass(frozen=True)
class Timing:
    name: str
    median_ms: float
    baseline_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline_ms else self.median_ms / self.baseline_ms


def median_ms(work: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        work()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return statistics.median(samples)


def vllm_text(target_bytes: int) -> str:
    """The real capture, its per-model series repeated for many models (LoRA adapters)."""
    text = (FIXTURES / "metrics.txt").read_text()
    if len(text) >= target_bytes:
        return text
    head: list[str] = []
    series: list[str] = []
    for line in text.splitlines():
        (series if 'model_name="tiny"' in line else head).append(line)
    out = list(head)
    n = 0
    while sum(len(line) + 1 for line in out) < target_bytes:
        n += 1
        out.extend(re.sub('model_name="tiny"', f'model_name="lora-{n}"', s) for s in series)
    # Keep each family's samples together after its TYPE line, as the format requires.
    return _regroup(out)


def _regroup(lines: list[str]) -> str:
    families: dict[str, list[str]] = {}
    order: list[str] = []
    current = ""
    for line in lines:
        if line.startswith("# HELP "):
            current = line.split()[2]
            if current not in families:
                families[current] = []
                order.append(current)
                families[current].append(line)
        elif line.startswith("# TYPE "):
            families[line.split()[2]].append(line)
        elif line:
            name = line.split("{")[0].split(" ")[0]
            owners = [f for f in order if name == f or name.startswith(f + "_")]
            families[max(owners, key=len) if owners else current].append(line)
    return "\n".join(line for f in order for line in families[f]) + "\n"


def parse_and_expose(size: int, repeat: int) -> Timing:
    text = vllm_text(size)

    def ours() -> bytes:
        snapshot = snapshot_from_text(text)
        collector = EngineExporter(lambda: {"t": snapshot}, targets=["t"], reexpose=True)
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        registry.register(collector)
        return generate_latest(registry)

    def baseline() -> list[object]:
        return list(text_string_to_metric_families(text))

    kib = len(text.encode()) / 1024
    return Timing(
        f"vLLM /metrics {kib:,.0f} KiB: parse+normalise+re-expose vs parser alone",
        median_ms(ours, repeat),
        median_ms(baseline, repeat),
    )


def render_eight_targets(repeat: int) -> Timing:
    targets = [
        {"name": f"t{i}", "url": f"http://10.0.0.{i}:8000", "model": "tiny"} for i in range(8)
    ]
    config = parse_config({"targets": targets})
    runtime = Runtime(config, probe=lambda spec: sample_result(), discover=lambda *a: "tiny")
    assert runtime.engines is not None
    snapshot = snapshot_from_text((FIXTURES / "metrics.txt").read_text())
    for target in config.targets:
        runtime.engines.accept(target.name, snapshot)
        for _ in range(5):
            runtime.metrics.record(target.name, sample_result())
    no_reexpose = Runtime(
        parse_config({"targets": targets, "collectors": {"engines": {"reexpose": False}}}),
        probe=lambda spec: sample_result(),
        discover=lambda *a: "tiny",
    )
    assert no_reexpose.engines is not None
    for target in no_reexpose.config.targets:
        no_reexpose.engines.accept(target.name, snapshot)
    return Timing(
        "our /metrics, 8 targets, vLLM re-exposed (vs not re-exposed)",
        median_ms(runtime.render, repeat),
        median_ms(no_reexpose.render, repeat),
    )
