"""The pack against a real Prometheus (and Alertmanager) scraping ``streamobs run``.

1. Every dashboard query, with its template variables resolved through Prometheus the way
   Grafana resolves them, and every rule expression return data without error; alert
   conditions are false on a healthy system, so for alerts each series the condition
   compares must return data. Series the simulator cannot make (NVML, the efficiency
   series derived from it, OTLP export health) come from a second scrape target that
   serves ``tests/data/pack/gpu-host.prom``, as a streamobs on a GPU host would. The
   daemon runs its trace receiver and the simulator sends it each request's span, as vLLM
   with ``--otlp-traces-endpoint`` does, so the per-probe server timing series exist.
2. Degrading the simulator's TTFT makes Prometheus page through the example Alertmanager
   routing to a webhook, while the TTFT ticket is inhibited. The windows are shortened to
   seconds (the same generator, other numbers); the shipped windows are promtool-tested.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.pack.alerts import alert_rules, error_ratio_record, render_rules, rule_groups
from streamobs.pack.command import RULES_FILE, write_files
from streamobs.pack.config import DEFAULT, BurnWindow, Objectives, PackConfig, for_daemon_config
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, require_binary
from tests.pack_helpers import (
    ALERTMANAGER_EXAMPLE,
    DASHBOARDS,
    GPU_HOST_SERIES,
    RULES,
    dashboards,
    data_panels,
    eventually,
    parse_label_values,
    query_variables,
    substitute,
)
from tests.prometheus_server import (
    Alertmanager,
    Prometheus,
    QueryError,
    StaticMetrics,
    WebhookReceiver,
    wait_until,
)

# What Grafana puts in for its built-in variables, for a 1 s scrape interval.
BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}


def daemon_config(url: str, **target: Any) -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "2s",
        "targets": [{"name": "sim", "url": url, "interval": "200ms", "max_tokens": 8, **target}],
    }


# The second pack: streamobs configured with two targets of their own, non-default SLOs,
# and the pack written for that config (``streamobs pack --config``).
OWN_SLOS = {
    "sim": {"ttft": "1s", "tpot": "50ms", "objective": 0.995},
    "sim-errors": {"ttft": "3s", "objective": 0.98},
}
# The third: target sim probes two models, the simulator's model and an adapter of it with
# an SLO of its own, so the pack judges them apart.
MODELS = ["sim", {"name": "sim-lora", "slo": {"ttft": "250ms", "objective": 0.995}}]


@dataclass
class Stack:
    prometheus: Prometheus
    daemon_instance: str
    pack: PackConfig
    dashboards: Path


@pytest.fixture(scope="module", params=["default-pack", "two-targets-own-slos", "per-model-slos"])
def healthy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    binary = require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    own_slos = request.param == "two-targets-own-slos"
    per_model = request.param == "per-model-slos"
    traces_port = free_port()
    simulator = SimulatorConfig(
        model="sim",
        ttft=0.02,
        itl=0.005,
        queue=0.002,
        otlp_traces_endpoint=f"http://127.0.0.1:{traces_port}/v1/traces",
        otlp_traces_batch_delay=0.2,
        adapters="sim-lora" if per_model else "",
    )
    with Simulator(simulator) as sim:
        config = daemon_config(sim.url)
        config["traces_receiver"] = {"http_listen_address": f"127.0.0.1:{traces_port}"}
        # A second target whose every stream ends in an error event, so the outcome
        # panels have failures to show.
        config["targets"].append(
            {
                "name": "sim-errors",
                "url": sim.url,
                "interval": "300ms",
                "max_tokens": 8,
                "headers": {"X-Streamobs-Sim-Fault": "error_event"},
            }
        )
        if own_slos:
            for target in config["targets"]:
                target["slo"] = OWN_SLOS[target["name"]]
        if per_model:
            config["targets"][0]["model"] = MODELS
        if own_slos or per_model:
            pack = for_daemon_config(parse_config(config), source="streamobs.yml")
            write_files(workdir / "pack", pack)
            rules, folder = workdir / "pack" / RULES_FILE, workdir / "pack" / "dashboards"
        else:
            pack, rules, folder = DEFAULT, RULES, DASHBOARDS
        daemon = Daemon(parse_config(config))
        daemon.start()
        gpu_host = StaticMetrics(GPU_HOST_SERIES.read_text(encoding="utf-8"))
        instance = f"127.0.0.1:{daemon.web.port}"
        try:
            with Prometheus(
                binary, workdir, {"streamobs": [instance, gpu_host.host]}, [rules]
            ) as prometheus:
                # Enough scrapes for every rate() and the rules' first evaluations.
                wait_until(
                    lambda: bool(
                        prometheus.query(f'count_over_time(up{{instance="{instance}"}}[1m]) >= 6')
                    ),
                    60,
                    "six scrapes of streamobs",
                )
                yield Stack(prometheus, instance, pack, folder)
        finally:
            gpu_host.stop()
            daemon.stop()


def test_the_own_slos_pack_judges_each_target_by_its_own_slo() -> None:
    pack = for_daemon_config(
        parse_config(
            {
                "targets": [
                    {"name": name, "url": "http://127.0.0.1:8000", "slo": slo}
                    for name, slo in OWN_SLOS.items()
                ]
            }
        )
    )
    assert pack.objectives == (
        Objectives(("sim",), 1.0, 0.05, 0.995),
        Objectives(("sim-errors",), 3.0, 0.1, 0.98),
    )


def test_the_per_model_pack_judges_the_adapter_apart() -> None:
    target = {"name": "sim", "url": "http://127.0.0.1:8000", "model": MODELS}
    pack = for_daemon_config(parse_config({"targets": [target]}))
    assert pack.objectives == (
        Objectives(("sim",), 2.0, 0.1, 0.99, excluded_models=("sim-lora",)),
        Objectives(("sim",), 0.25, 0.1, 0.995, models=("sim-lora",)),
    )


def _resolve_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable set to all its values, as Grafana's multi-select sends them."""
    values = dict(BUILTINS)
    for variable in query_variables(dashboard):
        match, label = parse_label_values(variable["query"])
        found = prometheus.label_values(label, substitute(match, values) if match else "")
        assert found, f"variable {variable['name']}: {variable['query']} found no values"
        values[variable["name"]] = "|".join(found)
    return values


def test_every_dashboard_query_returns_data(healthy: Stack) -> None:
    prometheus = healthy.prometheus
    resolved: list[tuple[str, str]] = []
    for name, dashboard in dashboards(healthy.dashboards).items():
        values = _resolve_variables(prometheus, dashboard)
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                where = f"{name} / {panel['title']} / {target['refId']}"
                resolved.append((where, substitute(target["expr"], values)))
    assert len(resolved) > 60

    def problems() -> list[str]:
        found = []
        for where, expr in resolved:
            try:
                if not prometheus.query(expr):
                    found.append(f"{where}: no data: {expr}")
            except QueryError as exc:
                found.append(f"{where}: {exc}")
        return found

    # Rates over a few seconds of data can be empty for a moment; errors never are.
    assert eventually(problems, 15) == []


def test_the_ttft_parts_are_the_simulators_own(healthy: Stack) -> None:
    """The simulator's TTFT is its queue plus its prefill (no API server around it): the
    panel's queue is at least the simulator's queue time and its "server, other" is 0."""
    probes = dashboards(healthy.dashboards)["streamobs-probes.json"]
    (panel,) = [p for p in data_panels(probes) if p.get("repeat") == "target"]
    parts = {target["legendFormat"]: target["expr"] for target in panel["targets"]}
    assert set(parts) == {"{{phase}}", "path", "queue", "prefill", "server, other"}
    # One panel per target, as Grafana repeats it: this one for "sim".
    values = {**BUILTINS, "job": "streamobs", "target": "sim", "model": ".*"}

    def problems() -> list[str]:
        found = {
            legend: healthy.prometheus.query(substitute(expr, values))
            for legend, expr in parts.items()
            if legend != "{{phase}}"
        }
        if any(len(samples) != 1 for samples in found.values()):
            return [f"not one series per part: {found}"]
        mean = {legend: float(samples[0]["value"][1]) for legend, samples in found.items()}
        wrong = []
        if not mean["queue"] >= 0.002:
            wrong.append(f"queue below the simulator's: {mean}")
        if not abs(mean["server, other"]) < 1e-6:
            wrong.append(f"server time outside queue and prefill: {mean}")
        if not (mean["prefill"] > 0 and mean["path"] > 0):
            wrong.append(f"no prefill or path time: {mean}")
        return wrong

    assert eventually(problems, 15) == []


def test_every_rule_expression_runs_and_every_alert_signal_has_data(healthy: Stack) -> None:
    prometheus = healthy.prometheus
    pack = healthy.pack
    groups = rule_groups(pack)
    exprs = [rule.expr for group in groups for rule in group.rules]
    signals = [signal for alert in alert_rules(groups) for signal in alert.signals]
    # Each target's error ratios, and those of each model judged apart.
    scopes = ['target="sim"', 'target="sim-errors"'] + [
        f'target="{o.targets[0]}", model="{model}"' for o in pack.objectives for model in o.models
    ]
    recorded = [
        f'{error_ratio_record(pack, window)}{{slo="{slo}", {scope}}}'
        for window in pack.slo_windows
        for slo in ("ttft", "tpot", "availability")
        for scope in scopes
    ]

    def problems() -> list[str]:
        found = []
        for expr in exprs:
            try:
                prometheus.query(expr)  # alert conditions: false now, but must run
            except QueryError as exc:
                found.append(str(exc))
        for expr in signals + recorded:
            try:
                if not prometheus.query(expr):
                    found.append(f"no data: {expr}")
            except QueryError as exc:
                found.append(str(exc))
        # Prometheus' own verdict on each loaded rule after its evaluations.
        for rule in prometheus.rules():
            if rule["health"] != "ok":
                found.append(f"{rule['name']}: {rule['health']} {rule.get('lastError')}")
        return found

    assert eventually(problems, 15) == []
    assert {r["name"] for r in prometheus.rules()} >= {a.alert for a in alert_rules(groups)}


def test_streamobs_and_the_rules_agree_about_every_slo(healthy: Stack) -> None:
    """The rules' SLOs are those streamobs exports, for every target and model."""
    (mismatch,) = [
        a for a in alert_rules(rule_groups(healthy.pack)) if a.alert == "StreamobsSLOConfigMismatch"
    ]
    assert healthy.prometheus.query(mismatch.expr) == []
    # ... and each setting it compares exists: the target's, and the adapter's own.
    for signal in mismatch.signals:
        assert healthy.prometheus.query(signal), signal


def _fast_rules(threshold: float) -> str:
    """The TTFT SLO group from the same generator, with windows of seconds."""
    config = dataclasses.replace(
        DEFAULT,
        objectives=(Objectives((), threshold, 0.1, 0.99),),
        burn_windows=(
            BurnWindow("20s", "5s", 14.4, "critical", "0s"),
            BurnWindow("40s", "10s", 6.0, "critical", "0s"),
            # As with the shipped windows' "for", a ticket only fires after the page would.
            BurnWindow("60s", "15s", 3.0, "warning", "10s"),
            BurnWindow("90s", "20s", 1.0, "warning", "15s"),
        ),
    )
    groups = [g for g in rule_groups(config) if g.name == "streamobs-slo-ttft"]
    return render_rules(config, groups)


def test_the_model_with_the_stricter_slo_pages_alone(tmp_path: Path) -> None:
    """One target, two models: the simulator's (the target's 2 s TTFT SLO) and an adapter
    with 250 ms of its own. Slowing every stream to 600 ms pages the adapter only, through
    the rules generated for that config, and streamobs and the rules agree throughout."""
    binary = require_binary("prometheus")
    simulator = SimulatorConfig(model="sim", adapters="sim-lora", ttft=0.02, itl=0.005)
    with Simulator(simulator) as sim:
        config = daemon_config(
            sim.url, interval="100ms", max_tokens=4, slo={"ttft": "2s"}, model=MODELS
        )
        pack = dataclasses.replace(
            for_daemon_config(parse_config(config), source="streamobs.yml"),
            burn_windows=(
                BurnWindow("20s", "5s", 14.4, "critical", "0s"),
                BurnWindow("40s", "10s", 6.0, "critical", "0s"),
            ),
        )
        rules = tmp_path / "per-model.rules.yml"
        rules.write_text(render_rules(pack))
        daemon = Daemon(parse_config(config))
        daemon.start()
        instance = f"127.0.0.1:{daemon.web.port}"
        try:
            with Prometheus(binary, tmp_path / "prom", {"streamobs": [instance]}, [rules]) as prom:
                ratio = 'job_target:streamobs_slo_errors:ratio_rate20s{slo="ttft", target="sim"'
                lora, others = f'{ratio}, model="sim-lora"}}', f'{ratio}, model=""}}'
                healthy = f"{lora} < 0.01 and on () {others} < 0.01"
                wait_until(lambda: bool(prom.query(healthy)), 60, "healthy TTFT SLIs")

                sim.reconfigure(ttft=0.6)
                page = 'ALERTS{alertname="StreamobsTTFTBudgetBurn", alertstate="firing"'
                pairs = f'count({page}, model="sim-lora"}}) == 2'
                wait_until(lambda: bool(prom.query(pairs)), 60, "both pairs paging for sim-lora")
                # The simulator's model is within its target's 2 s: no page, not even pending.
                assert prom.query('ALERTS{alertname="StreamobsTTFTBudgetBurn", model=""}') == []
                assert prom.query(f"{others} < 0.01"), "the simulator's model is judged good"
                assert prom.query('ALERTS{alertname="StreamobsSLOConfigMismatch"}') == []
        finally:
            daemon.stop()


def _alertmanager_config(webhook: WebhookReceiver) -> dict[str, Any]:
    """The example config, its receivers pointed at the test's webhook and its waits cut."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    config["route"].update(group_wait="1s", group_interval="1s")
    return config


def test_slow_ttft_pages_through_alertmanager_and_the_ticket_is_inhibited(
    tmp_path: Path,
) -> None:
    prometheus_binary = require_binary("prometheus")
    alertmanager_binary = require_binary("prometheus-alertmanager", "alertmanager")
    threshold = 0.25
    rules = tmp_path / "fast.rules.yml"
    rules.write_text(_fast_rules(threshold))
    webhook = WebhookReceiver()
    with Simulator(SimulatorConfig(model="sim", ttft=0.02, itl=0.005)) as sim:
        daemon = Daemon(
            parse_config(
                daemon_config(sim.url, interval="100ms", max_tokens=4, slo={"ttft": "250ms"})
            )
        )
        daemon.start()
        try:
            with (
                Alertmanager(
                    alertmanager_binary, tmp_path / "am", _alertmanager_config(webhook)
                ) as alertmanager,
                Prometheus(
                    prometheus_binary,
                    tmp_path / "prom",
                    {"streamobs": [f"127.0.0.1:{daemon.web.port}"]},
                    [rules],
                    alertmanager=alertmanager.url,
                ) as prometheus,
            ):
                healthy = 'job_target:streamobs_slo_errors:ratio_rate20s{slo="ttft"} < 0.01'
                wait_until(lambda: bool(prometheus.query(healthy)), 60, "a healthy TTFT SLI")
                assert webhook.alerts("/page") == []

                degraded = time.monotonic()
                sim.reconfigure(ttft=0.6)
                wait_until(lambda: bool(webhook.alerts("/page")), 60, "the TTFT page")
                # Windows of 20s and 5s, a 1 s scrape and evaluation, a 1 s group wait.
                assert time.monotonic() - degraded < 30
                page = webhook.alerts("/page")[0]
                assert page["status"] == "firing"
                assert page["labels"]["alertname"] == "StreamobsTTFTBudgetBurn"
                assert page["labels"]["severity"] == "critical"
                assert page["labels"]["slo"] == "ttft"
                assert page["labels"]["target"] == "sim"
                assert page["annotations"]["runbook_url"].endswith("#streamobsttftbudgetburn")

                # The ticket windows fire too, and the page inhibits them.
                def ticket_inhibited() -> bool:
                    return any(
                        a["labels"]["severity"] == "warning" and a["status"]["inhibitedBy"]
                        for a in alertmanager.alerts()
                    )

                wait_until(ticket_inhibited, 60, "the TTFT ticket to be inhibited")
                assert webhook.alerts("/ticket") == []
        finally:
            daemon.stop()
            webhook.stop()
