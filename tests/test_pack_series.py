"""Every series name the rules and dashboards read is one streamobs exposes.

A typo in a metric name makes a panel silently empty and an alert silently never fire;
the real-Prometheus test catches it for what the simulator produces, this catches it for
every name, against the golden /metrics and the collectors' own name tables.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamobs.collectors.engines.names import NORMALISED
from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.export.prometheus.server_timing import ServerTimingMetrics
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.traces.records import ServerSpan, server_timing
from tests.pack_helpers import GOLDEN_METRICS, GPU_HOST_SERIES, RULES, dashboards, rules

_NAME = re.compile(r"\b((?:streamobs|process)_[a-z0-9_]+)\b")
_SUFFIXES = ("_bucket", "_count", "_sum")


def _families(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {name + suffix for suffix in _SUFFIXES}
    return names


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _daemon_families() -> set[str]:
    """The families a daemon exposes before its first probe (nothing is started)."""
    config = {
        "web": {"listen_address": "127.0.0.1:0"},
        "targets": [{"name": "t", "url": "http://127.0.0.1:9", "model": "m"}],
    }
    daemon = Daemon(parse_config(config))
    try:
        return _families(daemon.metrics().body.decode())
    finally:
        daemon.web.server_close()


def _server_timing_families() -> set[str]:
    """Each probe's own server timing: registered only while the trace receiver is on."""
    registry = CollectorRegistry()
    timing = ServerTimingMetrics(registry, {})
    result = ProbeResult(
        url="http://127.0.0.1:9/v1/chat/completions",
        endpoint="chat",
        model="m",
        outcome=Outcome.OK,
        start_ns=0,
        started_at=0.0,
        first_token_ns=2_000_000,
    )
    span = ServerSpan("ab" * 16, "cd" * 8, None, 0, 1, ttft_seconds=0.001, queue_seconds=0.0)
    timing.record("t", result, server_timing(result.first_token_ns, span))
    return _families(generate_latest(registry).decode())


def _from_code() -> set[str]:
    """Names the code says it exposes: the golden /metrics, a daemon's own /metrics and
    every name table."""
    names = _families(GOLDEN_METRICS.read_text(encoding="utf-8")) | _daemon_families()
    names |= _server_timing_families()
    for spec in NORMALISED:
        names.add(spec.name)
        if spec.kind == "histogram":
            names |= {spec.name + suffix for suffix in _SUFFIXES}
    gpu_names = _optional("streamobs.collectors.gpu.names")
    if gpu_names is not None:
        names |= {spec.name for spec in gpu_names.GPU_METRICS}
    efficiency = _optional("streamobs.efficiency")
    if efficiency is not None:
        names |= set(efficiency.DOCUMENTATION)
    otlp_health = _optional("streamobs.export.otlp.health")
    if otlp_health is not None and otlp_health.__file__:
        # Its counters are created in code, not listed in a table: take the names as
        # written there, with the _total prometheus_client adds to a counter.
        source = Path(otlp_health.__file__).read_text(encoding="utf-8")
        for name in re.findall(r'"(streamobs_[a-z0-9_]+)"', source):
            names |= {name, name + "_total"}
    return names


def _used() -> set[str]:
    text = RULES.read_text(encoding="utf-8")
    recorded = {r["record"] for r in rules("record")}
    used = set(_NAME.findall(text)) - {n for n in recorded}
    for dashboard in dashboards().values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                used |= set(_NAME.findall(target["expr"]))
        for variable in dashboard["templating"]["list"]:
            used |= set(_NAME.findall(str(variable.get("query", ""))))
    # ``streamobs_slo_errors`` is only ever part of a recorded name.
    return {n for n in used if n != "streamobs_slo_errors"}


def test_every_series_the_pack_reads_is_exposed() -> None:
    used = _used()
    assert len(used) > 40
    unknown = used - _from_code() - _families(GPU_HOST_SERIES.read_text(encoding="utf-8"))
    assert unknown == set()


@pytest.mark.parametrize(
    "module",
    ["streamobs.collectors.gpu.names", "streamobs.efficiency", "streamobs.export.otlp.health"],
)
def test_the_gpu_host_fixture_uses_the_collectors_names(module: str) -> None:
    """The fixture stands in for series this machine cannot make; it must not drift from
    the names the collectors really expose."""
    if _optional(module) is None:
        pytest.skip(f"{module} is not part of this tree")
    fixture = _families(GPU_HOST_SERIES.read_text(encoding="utf-8"))
    fixture -= {"streamobs_build_info", "streamobs_collector_up"}
    assert fixture - _from_code() == set()
