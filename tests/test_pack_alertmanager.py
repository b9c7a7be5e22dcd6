"""The example Alertmanager config: valid, pages on critical, tickets on warning, and a
page for an SLO holds back that SLO's ticket (and nothing else)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamobs.config import parse_config
from streamobs.pack.alertmanager import render_alertmanager
from streamobs.pack.config import DEFAULT, for_daemon_config
from tests.fixtures import require_binary
from tests.pack_helpers import ALERTMANAGER_EXAMPLE
from tests.prometheus_server import Alertmanager, WebhookReceiver, wait_until


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=StreamobsTTFTBudgetBurn", "slo=ttft"], "page"),
        (["severity=critical", "alertname=StreamobsProbesAbsent"], "page"),
        (["severity=warning", "alertname=StreamobsTTFTBudgetBurn", "slo=ttft"], "ticket"),
        (["severity=warning", "alertname=StreamobsGpuHot"], "ticket"),
        (["alertname=SomethingElse"], "ticket"),
    ],
)
def test_routes(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_EXAMPLE}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def _alert(alertname: str, severity: str, target: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": alertname,
            "severity": severity,
            "job": "streamobs",
            "target": target,
            **labels,
        },
        "annotations": {"summary": alertname},
    }


def test_a_page_inhibits_the_same_slos_ticket_only(tmp_path: Path) -> None:
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    webhook = WebhookReceiver()
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    config["route"].update(group_wait="1s", group_interval="1s")
    try:
        with Alertmanager(binary, tmp_path, config) as alertmanager:
            burn = "StreamobsTTFTBudgetBurn"
            alertmanager.post_alerts(
                [
                    _alert(burn, "critical", "a", slo="ttft", long="1h", short="5m"),
                    _alert(burn, "warning", "a", slo="ttft", long="1d", short="2h"),  # held
                    _alert(burn, "warning", "b", slo="ttft", long="1d", short="2h"),
                    _alert("StreamobsEngineDown", "critical", "a"),
                    _alert("StreamobsEngineKvCacheNearFull", "warning", "a", model="m"),
                ]
            )

            def delivered() -> bool:
                return len(webhook.alerts("/page")) >= 2 and len(webhook.alerts("/ticket")) >= 2

            wait_until(delivered, 30, "notifications")
            pages = {
                (a["labels"]["alertname"], a["labels"]["target"]) for a in webhook.alerts("/page")
            }
            tickets = {
                (a["labels"]["alertname"], a["labels"]["target"]) for a in webhook.alerts("/ticket")
            }
            assert pages == {(burn, "a"), ("StreamobsEngineDown", "a")}
            # The other target's ticket and the non-SLO ticket still go out.
            assert tickets == {(burn, "b"), ("StreamobsEngineKvCacheNearFull", "a")}
            inhibited = [a for a in alertmanager.alerts() if a["status"]["inhibitedBy"]]
            assert [(a["labels"]["alertname"], a["labels"]["target"]) for a in inhibited] == [
                (burn, "a")
            ]
    finally:
        webhook.stop()


def test_a_model_judged_by_its_own_slo_is_grouped_and_inhibited_apart() -> None:
    config = parse_config(
        {
            "targets": [
                {
                    "name": "t",
                    "url": "http://127.0.0.1:8000",
                    "model": ["base", {"name": "strict", "slo": {"ttft": "500ms"}}],
                }
            ]
        }
    )
    rendered = yaml.safe_load(render_alertmanager(for_daemon_config(config)))
    assert "model" in rendered["route"]["group_by"]
    assert all("model" in rule["equal"] for rule in rendered["inhibit_rules"])
    # Without models of their own, the example stays as checked in.
    default = yaml.safe_load(render_alertmanager(DEFAULT))
    assert "model" not in default["route"]["group_by"]
