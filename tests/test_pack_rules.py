"""The alert rules: promtool checks and unit tests, the contract every alert keeps, and
the generator (one config, checked-in output that is never stale)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamobs.config import ConfigError
from streamobs.pack.alerts import Scope
from streamobs.pack.command import generated_files, main
from streamobs.pack.config import DEFAULT, Objectives, PackConfig, parse_options
from tests.fixtures import ROOT, require_binary
from tests.pack_helpers import RULE_TESTS, RULES, RUNBOOKS, data_panels, rule_groups, rules

SEVERITIES = {"critical", "warning"}


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", sorted(p.name for p in RULE_TESTS.glob("*.yaml")))
def test_promtool_unit_tests(test_file: str) -> None:
    """Fast burns page within 15 minutes, a normal day never pages, absent probes alert,
    and every other alert fires on its own scenario (see the files' comments)."""
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", test_file],
        cwd=RULE_TESTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_slo_has_the_workbook_windows_in_one_group() -> None:
    expected = {
        ("1h", "5m", "14.4", "critical"),
        ("6h", "30m", "6", "critical"),
        ("1d", "2h", "3", "warning"),
        ("3d", "6h", "1", "warning"),
    }
    slo_groups = [g for g in rule_groups() if g["name"].startswith("streamobs-slo-")]
    assert {g["name"] for g in slo_groups} == {
        "streamobs-slo-ttft",
        "streamobs-slo-tpot",
        "streamobs-slo-availability",
    }
    for group in slo_groups:
        recorded = {r["record"] for r in group["rules"] if "record" in r}
        pairs = set()
        for alert in (r for r in group["rules"] if "alert" in r):
            labels = alert["labels"]
            factor = re.search(r"> \((\S+) \* ", alert["expr"])
            assert factor, alert["expr"]
            pairs.add((labels["long"], labels["short"], factor.group(1), labels["severity"]))
            # Both windows are read from recording rules of this same group.
            for window in (labels["long"], labels["short"]):
                record = f"job_target:streamobs_slo_errors:ratio_rate{window}"
                assert record in recorded and record in alert["expr"]
        assert pairs == expected, group["name"]


def test_ttft_sli_counts_failed_probes_as_bad() -> None:
    [ratio_5m] = [
        r
        for r in rules("record")
        if r["labels"]["slo"] == "ttft" and r["record"].endswith("ratio_rate5m")
    ]
    # good = exact probes under the threshold; total = every failed probe and every exact one.
    assert (
        'streamobs_probe_ttft_seconds_bucket{job="streamobs", le=~"2|2\\\\.0"}' in ratio_5m["expr"]
    )
    assert "rate(streamobs_probe_latency_eligible_total{" in ratio_5m["expr"]


def _runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            # GitHub's anchor for a heading: lower case, spaces to dashes, no punctuation.
            title = line[3:].strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    anchors = _runbook_anchors()
    alerts = rules("alert")
    assert len({a["alert"] for a in alerts}) >= 19
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url.startswith(DEFAULT.runbook_url + "#"), name
        assert url.split("#", 1)[1] in anchors, f"{name}: no runbook section for {url}"
    # ... and no runbook section for an alert that does not exist.
    assert anchors == {a["alert"].lower() for a in alerts}


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested = " ".join(p.read_text(encoding="utf-8") for p in RULE_TESTS.glob("*.yaml"))
    untested = {a["alert"] for a in rules("alert")} - set(re.findall(r"Streamobs\w+", tested))
    assert untested == set()


def test_checked_in_files_are_not_stale() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamobs.pack", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_a_stale_file_and_writing_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    rules_file = tmp_path / "alerts" / "streamobs.rules.yml"
    rules_file.write_text(rules_file.read_text().replace("14.4", "14"))
    (tmp_path / "dashboards" / "streamobs-gpu.json").unlink()
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: alerts/streamobs.rules.yml" in err
    assert "stale: dashboards/streamobs-gpu.json" in err
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0


def _promtool_check(path: Path) -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_threshold_lives_in_one_place(tmp_path: Path) -> None:
    """One slo: in streamobs' config moves the SLI bucket, the alert text, the
    config-mismatch check and the dashboard's threshold line together; options move the
    selector and the windows."""
    config = tmp_path / "streamobs.yml"
    config.write_text(
        yaml.safe_dump(
            {"targets": [{"name": "llm", "url": "http://127.0.0.1:8000", "slo": {"ttft": "1.5s"}}]}
        )
    )
    options = tmp_path / "pack.yml"
    options.write_text(
        yaml.safe_dump(
            {
                "selector": 'job="llm-probes"',
                "burn_windows": [
                    {"long": "1h", "short": "5m", "factor": 10, "severity": "critical", "for": "1m"}
                ],
            }
        )
    )
    out = tmp_path / "pack"
    assert main(["--config", str(config), "--options", str(options), "--out", str(out)]) == 0
    text = (out / "alerts" / "streamobs.rules.yml").read_text()
    assert "for the targets and SLOs of streamobs.yml" in text
    assert 'streamobs_probe_ttft_seconds_bucket{job="llm-probes", target="llm", le="1.5"}' in text
    assert 'job="streamobs"' not in text
    assert "slower than 1.5s to the first token" in text
    assert 'streamobs_slo_ttft_threshold_seconds{job="llm-probes", target="llm"} != 1.5' in text
    assert "> (10 * 0.01)" in text and "14.4" not in text
    probes = (out / "dashboards" / "streamobs-probes.json").read_text()
    assert '"value": 1.5' in probes
    _promtool_check(out / "alerts" / "streamobs.rules.yml")


def test_two_targets_with_their_own_objectives(tmp_path: Path) -> None:
    """Each target is judged by its own slo: thresholds in its buckets, its objective in
    its burn-rate limits, one rule per window and alert (promtool refuses duplicates)."""
    config = tmp_path / "streamobs.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "chat.a",
                        "url": "http://127.0.0.1:8000",
                        "slo": {"ttft": "1s", "tpot": "50ms", "objective": 0.995},
                    },
                    {"name": "b", "url": "http://127.0.0.1:8001", "slo": {"objective": 0.98}},
                ]
            }
        )
    )
    out = tmp_path / "pack"
    assert main(["--config", str(config), "--out", str(out)]) == 0
    rules_file = out / "alerts" / "streamobs.rules.yml"
    text = rules_file.read_text()
    assert 'target="chat.a", le=~"1|1\\\\.0"' in text
    assert 'target="b", le=~"2|2\\\\.0"' in text
    # The availability SLI is one ratio over both targets (a dot in a name is escaped).
    assert 'streamobs_probe_failures_total{job="streamobs", target=~"chat\\\\.a|b"}' in text
    assert "(14.4 * 0.005)" in text and "(14.4 * 0.02)" in text and "(14.4 * 0.01)" not in text
    page = next(
        r
        for g in yaml.safe_load(text)["groups"]
        for r in g["rules"]
        if r.get("alert") == "StreamobsTTFTBudgetBurn" and r["labels"]["long"] == "1h"
    )
    assert "objective (99.5% for chat.a; 98% for b)" in page["annotations"]["description"]
    assert 'streamobs_slo_objective_ratio{job="streamobs", target="b"} != 0.98' in text
    slo = (out / "dashboards" / "streamobs-slo.json").read_text()
    assert "99.5% for chat.a; 98% for b" in slo
    _promtool_check(rules_file)


def test_promtool_unit_tests_of_a_pack_that_judges_models_apart(tmp_path: Path) -> None:
    """The pack for alerts/tests/per_model/streamobs.yml (a target with two models, one
    with a stricter TTFT SLO): the slow model pages, the other does not, no
    StreamobsSLOConfigMismatch fires, and it does name a model streamobs judges otherwise."""
    promtool = require_binary("promtool")
    tests = RULE_TESTS / "per_model"
    out = tmp_path / "pack"
    assert main(["--config", str(tests / "streamobs.yml"), "--out", str(out)]) == 0
    _promtool_check(out / "alerts" / "streamobs.rules.yml")
    shutil.copy(tests / "slo_ttft.yaml", out / "alerts")
    result = subprocess.run(
        [promtool, "test", "rules", "slo_ttft.yaml"],
        cwd=out / "alerts",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_model_with_its_own_slo_is_judged_apart_from_its_targets_others(
    tmp_path: Path,
) -> None:
    """Matchers by target and model in every SLI, alert, config check and SLO panel; the
    target's other models keep its SLO; a target whose listed models all have their own
    has no "other models" part (it would watch series that never exist)."""
    config = tmp_path / "streamobs.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "chat.a",
                        "url": "http://127.0.0.1:8000",
                        "model": ["base", {"name": "sql.lora", "slo": {"objective": 0.995}}],
                    },
                    {
                        "name": "b",
                        "url": "http://127.0.0.1:8001",
                        "model": [
                            {"name": "x", "slo": {"ttft": "1s"}},
                            {"name": "y", "slo": {"ttft": "1s"}},
                        ],
                    },
                ]
            }
        )
    )
    out = tmp_path / "pack"
    assert main(["--config", str(config), "--out", str(out)]) == 0
    rules_file = out / "alerts" / "streamobs.rules.yml"
    text = rules_file.read_text()
    _promtool_check(rules_file)
    others = 'target="chat.a", model!="sql.lora"'
    assert f'streamobs_probe_failures_total{{job="streamobs", {others}}}' in text
    assert (
        'sum by (job, target, model) (rate(streamobs_probe_failures_total{job="streamobs", '
        'target="chat.a", model="sql.lora"}[5m]))' in text
    )
    # One objective per part: the model's own 99.5%, the target's 99% for the rest.
    assert f'ratio_rate1h{{slo="ttft", {others}}} > (14.4 * 0.01)' in text
    assert 'ratio_rate1h{slo="ttft", target="chat.a", model="sql.lora"} > (14.4 * 0.005)' in text
    # b: both models share one SLO; nothing is left for the target's.
    assert 'target="b", model=~"x|y", le=~"1|1\\\\.0"' in text
    assert 'target="b", model!' not in text and 'target="b"}' not in text
    # The config check reads a model's own setting, else its target's.
    mismatch = next(
        r["expr"]
        for g in yaml.safe_load(text)["groups"]
        for r in g["rules"]
        if r.get("alert") == "StreamobsSLOConfigMismatch"
    )
    assert (
        '  streamobs_slo_objective_ratio{job="streamobs", target="chat.a", model="sql.lora"}\n'
        "or on (job, instance, target)\n"
        '  label_replace(streamobs_slo_objective_ratio{job="streamobs", target="chat.a", '
        'model=""}, "model", "sql.lora", "", "")\n) != 0.995' in mismatch
    )
    assert f'streamobs_slo_objective_ratio{{job="streamobs", {others}}} != 0.99' in mismatch
    slo = json.loads((out / "dashboards" / "streamobs-slo.json").read_text())
    exprs = {
        target["legendFormat"]: target["expr"]
        for panel in data_panels(slo)
        for target in panel["targets"]
        if panel["title"] == "Availability error budget left (28d)"
    }
    assert list(exprs) == ["{{target}} {{model}}"]
    assert 'target="chat.a", model="sql.lora"}[28d]) / 0.005' in exprs["{{target}} {{model}}"]
    objectives = (
        "99% for chat.a's other models, b model x, b model y; 99.5% for chat.a model sql.lora"
    )
    assert f"Availability SLO: {objectives}" in json.dumps(slo)


def test_objectives_by_model_judge_each_model_once() -> None:
    others = Objectives(("t",), 2.0, 0.1, 0.99, excluded_models=("b",))
    own = Objectives(("t",), 1.0, 0.1, 0.99, models=("b",))
    assert PackConfig(objectives=(others, own)).per_model
    assert not DEFAULT.per_model
    with pytest.raises(ValueError, match="judged whole and by model"):
        PackConfig(objectives=(Objectives(("t",), 2.0, 0.1, 0.99), own))
    with pytest.raises(ValueError, match="must exclude exactly the models"):
        PackConfig(objectives=(others,))
    with pytest.raises(ValueError, match="objectives by model are for one target"):
        PackConfig(objectives=(Objectives(("t", "u"), 1.0, 0.1, 0.99, models=("b",)),))
    with pytest.raises(ValueError, match=r"model\(s\) \['b'\] twice"):
        PackConfig(objectives=(others, own, own))
    # Model labels may hold . and +, which a regular expression must escape.
    assert Scope(("t",), ("a.b", "c+d")).matcher == 'target="t", model=~"a\\\\.b|c\\\\+d"'
    assert Scope(("t",), excluded=("a.b",)).matcher == 'target="t", model!="a.b"'


def test_options_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"probes_absent\.treshold: unknown key"):
        parse_options({"probes_absent": {"treshold": 1}})
    with pytest.raises(ConfigError, match=r"ttft: the SLOs are streamobs' own"):
        parse_options({"ttft": {"threshold_seconds": 1.5}})
    with pytest.raises(ConfigError, match=r"burn_windows\[0\]\.short: required"):
        parse_options({"burn_windows": [{"long": "1h"}]})
    with pytest.raises(ConfigError, match=r"gpu_hot\.severity: one of critical, warning"):
        parse_options({"gpu_hot": {"severity": "page"}})
    with pytest.raises(ConfigError, match=r"quantiles must be between 0 and 1"):
        parse_options({"quantiles": [0.5, 99]})
    with pytest.raises(ConfigError, match=r"slo_period: bad duration"):
        parse_options({"slo_period": "4w"})
    # The daemon config's durations: decimals and compound forms, written as Prometheus does.
    tuned = parse_options({"slo_period": "30d", "probes_absent": {"window": "1.5h"}})
    assert tuned.slo_period == "30d" and tuned.probes_absent.window == "1h30m"
    bad = tmp_path / "bad.yml"
    bad.write_text("colour: red\n")
    assert main(["--options", str(bad), "--check"]) == 2
    assert "bad.yml: colour: unknown key" in capsys.readouterr().err
    daemon = tmp_path / "streamobs.yml"
    daemon.write_text("taregts: []\n")
    assert main(["--config", str(daemon), "--check"]) == 2
    assert f"error: {daemon}: " in capsys.readouterr().err


def test_generated_files_are_the_rules_alertmanager_four_dashboards_and_the_prometheus_rule() -> (
    None
):
    assert sorted(str(p) for p in generated_files()) == [
        "alerts/alertmanager.example.yml",
        "alerts/streamobs.rules.yml",
        "dashboards/streamobs-engines.json",
        "dashboards/streamobs-gpu.json",
        "dashboards/streamobs-probes.json",
        "dashboards/streamobs-slo.json",
        "deploy/kubernetes/prometheusrule.yaml",
    ]
