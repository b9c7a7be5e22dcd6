"""/metrics at scale: the fast text path equals generate_latest byte for byte, renders only
the series that changed, and a reload of many targets keeps every unchanged series."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from streamobs.collectors.engines import snapshot_from_text
from streamobs.config import Config, parse_config
from streamobs.daemon import Runtime
from streamobs.export.prometheus.probe import ProbeMetrics
from streamobs.export.prometheus.text import render_registry
from streamobs.probe.result import Degraded, Delivery, Outcome, ProbeResult, TimingQuality
from streamobs.reference import sample_result
from tests.fixtures import FIXTURES

MS = 1_000_000


@pytest.fixture
def no_created_series() -> Iterator[None]:
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


def config(n: int, prefix: str = "t", **extra: object) -> Config:
    return parse_config(
        {
            "targets": [
                {
                    "name": f"{prefix}{i}",
                    "url": f"http://10.0.{i // 250}.{i % 250}:8000",
                    # Half configured, half discovered: both ways a model label appears.
                    **({"model": "m"} if i % 2 else {}),
                }
                for i in range(n)
            ],
            **extra,
        }
    )


def random_result(rng: random.Random) -> ProbeResult:
    fields: dict[str, object] = {
        "model": rng.choice(["m", "m2", "unknown"]),
        "started_at": rng.random() * 1e9,
        "dns_ns": rng.choice([None, rng.randrange(10 * MS)]),
        "tls_ns": rng.choice([None, rng.randrange(1000 * MS)]),
        "first_token_ns": rng.randrange(10_000 * MS),
        "done_ns": rng.randrange(10_000 * MS),
        "token_arrivals_ns": tuple(sorted(rng.randrange(1000 * MS) for _ in range(4))),
        "output_tokens": rng.randrange(100),
        "delivery": rng.choice([None, Delivery(3, 3, 1.0, 1, rng.random(), rng.random() < 0.5)]),
    }
    if rng.random() < 0.3:
        fields["outcome"] = rng.choice([o for o in Outcome if o is not Outcome.OK])
    if rng.random() < 0.2:
        fields["timing"] = TimingQuality(degraded=rng.choice(list(Degraded)))
    return replace(sample_result(), **fields)  # type: ignore[arg-type]


def fill(metrics: ProbeMetrics, cfg: Config, rng: random.Random, probes: int) -> None:
    names = [t.name for t in cfg.targets]
    for _ in range(probes):
        metrics.record(rng.choice(names), random_result(rng))


@pytest.mark.parametrize("created", [False, True], ids=["created-off", "created-on"])
def test_fast_text_equals_generate_latest(created: bool) -> None:
    if not created:
        disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        registry = CollectorRegistry(auto_describe=True)
        metrics = ProbeMetrics(registry)
        rng = random.Random(3)
        cfg = config(200)
        metrics.configure(cfg.targets, cfg.latency_buckets())
        fill(metrics, cfg, rng, 1500)
        # A reload drops some targets and brings them back (at the end), new edges too.
        fewer = config(150)
        metrics.configure(fewer.targets, fewer.latency_buckets())
        fill(metrics, fewer, rng, 300)
        edges = config(200, histogram_buckets={"ttft": [0.1, 0.5, 1, 2.5]})
        metrics.configure(edges.targets, edges.latency_buckets())
        fill(metrics, edges, rng, 500)
        fast, plain = render_registry(registry), generate_latest(registry)
        assert fast == plain
        families = {f.name for f in text_string_to_metric_families(fast.decode())}
        assert {"streamobs_probe_ttft_seconds", "streamobs_probe_attempts"} <= families
        assert (b"_created" in fast) is created
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


def test_a_render_formats_only_the_series_that_changed(no_created_series: None) -> None:
    cfg = config(1000)
    runtime = Runtime(cfg, probe=lambda spec: sample_result(), discover=lambda *a: "m")
    for target in cfg.targets:
        runtime._on_result(target, replace(sample_result(), model="m"))
    metrics = runtime.metrics
    first = render_registry(runtime.registry)
    rendered = metrics.renders
    assert render_registry(runtime.registry) == first
    assert metrics.renders == rendered  # nothing changed, nothing formatted again
    changed = cfg.targets[7]
    runtime._on_result(changed, replace(sample_result(), model="m", output_tokens=5))
    second = render_registry(runtime.registry)
    assert metrics.renders == rendered + 1
    assert second != first
    # Generous: on a quiet machine this is well under 100 ms.
    started = time.perf_counter()
    render_registry(runtime.registry)
    assert time.perf_counter() - started < 5.0


def series(text: str) -> dict[str, float]:
    """Every probe sample by name and labels."""
    out = {}
    for line in text.splitlines():
        if line.startswith("streamobs_probe_") and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_reload_of_a_thousand_targets_keeps_unchanged_series(no_created_series: None) -> None:
    cfg = config(1000, collectors={"engines": {"enabled": False}})
    runtime = Runtime(cfg, probe=lambda spec: sample_result(), discover=lambda *a: "m")
    for target in cfg.targets:
        runtime._on_result(target, replace(sample_result(), model="m"))
    before = series(runtime.render().decode())
    # The reloaded file: the same 1,000 targets but one removed and one added.
    data = {
        "targets": [
            *(
                {
                    "name": t.name,
                    "url": f"http://10.0.{i // 250}.{i % 250}:8000",
                    **({"model": "m"} if i % 2 else {}),
                }
                for i, t in enumerate(cfg.targets)
                if t.name != "t5"
            ),
            {"name": "new", "url": "http://10.9.9.9:8000", "model": "m"},
        ],
        "collectors": {"engines": {"enabled": False}},
    }
    reloaded = parse_config(data)
    took = []
    for _ in range(3):
        started = time.perf_counter()
        runtime.configure(reloaded, runtime.prepare(reloaded))
        took.append(time.perf_counter() - started)
    after = series(runtime.render().decode())
    gone = {k for k in before if 'target="t5"' in k}
    assert gone and not any('target="t5"' in k for k in after)
    kept = {k: v for k, v in before.items() if k not in gone}
    assert {k: after.get(k) for k in kept} == kept  # nothing dropped, nothing reset
    assert after['streamobs_probe_attempts_total{model="m",target="new"}'] == 0.0
    assert sorted(took)[1] < 2.0  # the median; about 50 ms on a quiet machine
    runtime.stop(1)


def test_the_daemons_render_is_generate_latest_byte_for_byte(no_created_series: None) -> None:
    # Every collector the daemon registers (vLLM normalised and re-exposed, GPU down, the
    # efficiency and overhead ones), with the probe series' cached text in between.
    cfg = config(20, collectors={"gpu": {"enabled": True}})
    runtime = Runtime(cfg, probe=lambda spec: sample_result(), discover=lambda *a: "m")
    vllm = runtime.engines
    assert vllm is not None
    snapshot = snapshot_from_text((FIXTURES / "metrics.txt").read_text())
    for name in vllm.target_names:
        vllm.accept(name, snapshot)
    rng = random.Random(5)
    for _ in range(200):
        target = rng.choice(cfg.targets)
        runtime._on_result(target, random_result(rng))
        if rng.random() < 0.1:
            assert runtime.render() == generate_latest(runtime.registry) + vllm.reexposed_text()
    assert runtime.render() == generate_latest(runtime.registry) + vllm.reexposed_text()
