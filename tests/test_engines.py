"""Engines apart from paths: two targets on one model server scrape it once, its series
appear once, and the dashboards' tokens/s is the engine's real rate (real Prometheus)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import require_binary, wait_for
from tests.pack_helpers import dashboards, data_panels, substitute
from tests.prometheus_server import Prometheus, wait_until


def two_paths_one_engine(url: str) -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "collectors": {"gpu": {"enabled": False}, "engines": {"timeout": "5s"}},
        "engines": [{"name": "sim-engine", "metrics_url": url + "/metrics", "interval": "1s"}],
        "targets": [
            {"name": name, "url": url, "engine": "sim-engine", "interval": "200ms",
             "max_tokens": 8, "model": "sim"}
            for name in ("direct", "via-proxy")
        ],
    }  # fmt: skip


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.005, itl=0.002)) as sim:
        yield sim


def series(text: str, name: str) -> list[dict[str, str]]:
    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_two_targets_on_one_engine_export_its_series_once(simulator: Simulator) -> None:
    d = Daemon(parse_config(two_paths_one_engine(simulator.url)))
    d.start()
    try:
        url = f"http://127.0.0.1:{d.web.port}/metrics"
        name = "streamobs_engine_generation_tokens_total"
        wait_for(lambda: bool(series(requests.get(url, timeout=10).text, name)))
        text = requests.get(url, timeout=10).text
        assert series(text, name) == [
            {"engine": "sim-engine", "engine_index": "0", "kind": "vllm", "model": "sim"}
        ]
        # vLLM's own series, re-exposed exactly once too (one engine: exactly as served).
        assert len(series(text, "vllm:generation_tokens_total")) == 1
        info = sorted(
            (labels["target"], labels["engine"]) for labels in series(text, "streamobs_target_info")
        )
        assert info == [("direct", "sim-engine"), ("via-proxy", "sim-engine")]
        up = series(text, "streamobs_collector_up")
        assert {"collector": "vllm", "target": "sim-engine"} in up
        assert len([labels for labels in up if labels["collector"] == "vllm"]) == 1
    finally:
        d.stop()


def _tokens_per_second_query() -> str:
    dashboard = dashboards()["streamobs-engines.json"]
    panel = next(p for p in data_panels(dashboard) if p["title"] == "Tokens per second")
    return next(t["expr"] for t in panel["targets"] if "generation" in t["legendFormat"])


def test_the_dashboards_tokens_per_second_is_the_engines_real_rate(
    simulator: Simulator, tmp_path: Any
) -> None:
    binary = require_binary("prometheus")
    d = Daemon(parse_config(two_paths_one_engine(simulator.url)))
    d.start()
    daemon = f"127.0.0.1:{d.web.port}"
    engine = simulator.url.removeprefix("http://")
    try:
        # Prometheus scrapes streamobs and, as the reference, the engine itself.
        with Prometheus(binary, tmp_path, {"streamobs": [daemon], "engine": [engine]}) as prom:
            window = "30s"
            wait_until(
                lambda: bool(prom.query(f'count_over_time(up{{job="engine"}}[{window}]) >= 25')),
                120,
                "30 s of scrapes",
            )
            # The variables as Grafana's "All" sends them: every engine behind every target.
            engines = prom.label_values("engine", 'streamobs_target_info{job="streamobs"}')
            assert engines == ["sim-engine"]
            values = {
                "job": "streamobs",
                "engine": "|".join(engines),
                "model": ".*",
                "__rate_interval": window,
            }
            dashboard = substitute(_tokens_per_second_query(), values)
            real = f'sum(rate(vllm:generation_tokens_total{{job="engine"}}[{window}]))'
            at = str(time.time() - 5)  # both answered over the same, completed window
            ours = prom.api("query", query=dashboard, time=at)["result"]
            reference = prom.api("query", query=real, time=at)["result"]
            assert len(ours) == 1 and len(reference) == 1
            shown, actual = float(ours[0]["value"][1]), float(reference[0]["value"][1])
            assert actual > 0
            # Two targets reach the engine: doubled series would show twice the rate. The
            # two rates come from different scrapes of the same counter, so a little apart.
            assert 0.75 < shown / actual < 1.33, (shown, actual)
    finally:
        d.stop()
