"""The metric contract, per engine kind: a real Prometheus scrapes a daemon that watches one
simulated engine of every kind (each recognised from what it serves), and every dashboard
query and alert signal that reads engine series either returns data for that kind's engine
or is marked as not available on that kind (and then really returns none there)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamobs.collectors.engines.kinds import KIND_NAMES, kind_spec
from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.pack.alerts import alert_rules, rule_groups
from streamobs.pack.availability import engine_families, kinds_sometimes_absent, kinds_with
from streamobs.pack.config import DEFAULT
from streamobs.pack.series import ENGINE_COLLECTORS
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import require_binary
from tests.pack_helpers import (
    RULES,
    dashboards,
    data_panels,
    eventually,
    parse_label_values,
    query_variables,
    substitute,
)
from tests.prometheus_server import Prometheus, QueryError, wait_until

BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}
MARK = "Not available on engine kinds"


def engine_name(kind: str) -> str:
    return f"sim-{kind}"


@dataclass
class Fleet:
    prometheus: Prometheus


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("contract")
    simulators = [
        Simulator(SimulatorConfig(model="sim", engine=kind, ttft=0.02, itl=0.004))
        for kind in KIND_NAMES
    ]
    for simulator in simulators:
        simulator.start()
    config: dict[str, Any] = {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "2s",
        "collectors": {"gpu": {"enabled": False}},
        # kind left to auto: each engine is recognised from what it serves.
        "engines": [
            {
                "name": engine_name(kind),
                "metrics_url": simulator.url + kind_spec(kind).metrics_path,
                "interval": "1s",
            }
            for kind, simulator in zip(KIND_NAMES, simulators, strict=True)
        ],
        "targets": [
            {
                "name": f"t-{kind}",
                "url": simulator.url,
                "engine": engine_name(kind),
                "model": "sim",
                "interval": "300ms",
                "max_tokens": 8,
            }
            for kind, simulator in zip(KIND_NAMES, simulators, strict=True)
        ],
    }
    daemon = Daemon(parse_config(config))
    daemon.start()
    instance = f"127.0.0.1:{daemon.web.port}"
    try:
        with Prometheus(binary, workdir, {"streamobs": [instance]}, [RULES]) as prometheus:
            wait_until(
                lambda: bool(
                    prometheus.query(f'count_over_time(up{{instance="{instance}"}}[1m]) >= 8')
                ),
                90,
                "eight scrapes of streamobs",
            )
            yield Fleet(prometheus)
    finally:
        daemon.stop()
        for simulator in simulators:
            simulator.stop()


def reads_engines(expr: str) -> bool:
    return bool(engine_families([expr])) or ENGINE_COLLECTORS in expr


def _variables(prometheus: Prometheus, dashboard: dict[str, Any], kind: str) -> dict[str, str]:
    """Every variable at all its values, but the target and engine of this kind only."""
    values = dict(BUILTINS)
    for variable in query_variables(dashboard):
        match, label = parse_label_values(variable["query"])
        found = prometheus.label_values(label, substitute(match, values) if match else "")
        values[variable["name"]] = "|".join(found)
    values.update(target=f"t-{kind}", engine=engine_name(kind))
    return values


def _has_data(prometheus: Prometheus, expr: str, engine: str) -> bool:
    result = prometheus.query(expr)
    return any(series["metric"].get("engine", engine) == engine for series in result)


def _broken(prometheus: Prometheus, checks: list[tuple[str, str, bool]], engine: str) -> list[str]:
    """Each (where, expression, available) whose data for ``engine`` is not as promised:
    none where available, or some where marked not available."""
    found = []
    for where, expr, available in checks:
        try:
            data = _has_data(prometheus, expr, engine)
        except QueryError as exc:
            found.append(f"{where}: {exc}")
            continue
        if data != available:
            said = "no data" if available else "data although marked not available"
            found.append(f"{where}: {said} for {engine}: {expr}")
    return found


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_engine_panel_has_data_or_says_it_cannot(fleet: Fleet, kind: str) -> None:
    prometheus = fleet.prometheus
    checks: list[tuple[str, str, bool]] = []
    for name, dashboard in dashboards().items():
        values = _variables(prometheus, dashboard, kind)
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                if not reads_engines(target["expr"]):
                    continue
                where = f"{name} / {panel['title']} / {target['refId']}"
                spec = kind_spec(kind)
                if spec in [k for k, _ in kinds_sometimes_absent([target["expr"]])]:
                    # May be absent (SGLang's retractions until the first): said, not checked.
                    assert f"On {kind} absent" in panel["description"], where
                    continue
                available = spec in kinds_with([target["expr"]])
                if not available:
                    marked = MARK in panel["description"] and kind in panel["description"]
                    assert marked, f"{where}: no data on {kind} and not marked so"
                checks.append((where, substitute(target["expr"], values), available))
    assert checks
    assert eventually(lambda: _broken(prometheus, checks, engine_name(kind)), 20) == []


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_engine_alert_signal_has_data_or_says_it_cannot(fleet: Fleet, kind: str) -> None:
    prometheus = fleet.prometheus
    checks: list[tuple[str, str, bool]] = []
    for alert in alert_rules(rule_groups(DEFAULT)):
        for signal in alert.signals:
            if not reads_engines(signal):
                continue
            exprs = [alert.expr, *alert.signals]
            if kind_spec(kind) in [k for k, _ in kinds_sometimes_absent(exprs)]:
                continue  # may be absent there (said in the reference): no data is no fault
            checks.append((alert.alert, signal, kind_spec(kind) in kinds_with(exprs)))
    assert checks
    rendered = Path(RULES).read_text(encoding="utf-8")
    for alert, _, available in checks:
        if not available:
            block = rendered.split(f"alert: {alert}\n", 1)[1].split("- alert:", 1)[0]
            assert "not_available_on_engine_kinds:" in block and kind in block, alert

    assert eventually(lambda: _broken(prometheus, checks, engine_name(kind)), 20) == []
