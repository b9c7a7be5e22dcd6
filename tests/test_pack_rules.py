"""The alert rules: promtool checks and unit tests, the contract every alert keeps, and
the generator (one config, checked-in output that is never stale)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamobs.pack.__main__ import generated_files, main
from streamobs.pack.config import DEFAULT, with_overrides
from tests.fixtures import ROOT, require_binary
from tests.pack_helpers import RULE_TESTS, RULES, RUNBOOKS, rule_groups, rules

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


def test_a_threshold_lives_in_one_place(tmp_path: Path) -> None:
    """One override moves the SLI bucket, the alert text, the config-mismatch check and
    the dashboard's threshold line together."""
    overrides = tmp_path / "pack.yml"
    overrides.write_text(
        yaml.safe_dump(
            {
                "selector": 'job="llm-probes"',
                "ttft": {"threshold_seconds": 1.5},
                "burn_windows": [
                    {"long": "1h", "short": "5m", "factor": 10, "severity": "critical", "for": "1m"}
                ],
            }
        )
    )
    assert main(["--config", str(overrides), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "alerts" / "streamobs.rules.yml").read_text()
    assert 'streamobs_probe_ttft_seconds_bucket{job="llm-probes", le="1.5"}' in text
    assert 'job="streamobs"' not in text
    assert "slower than 1.5s to the first token" in text
    assert 'streamobs_slo_ttft_threshold_seconds{job="llm-probes"} != 1.5' in text
    assert "> (10 * 0.01)" in text and "14.4" not in text
    probes = (tmp_path / "dashboards" / "streamobs-probes.json").read_text()
    assert '"value": 1.5' in probes
    promtool = require_binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "alerts" / "streamobs.rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_overrides_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"ttft\.treshold_seconds: unknown key"):
        with_overrides(DEFAULT, {"ttft": {"treshold_seconds": 1}})
    with pytest.raises(ValueError, match="objective must be between 0 and 1"):
        with_overrides(DEFAULT, {"availability": {"objective": 99}})
    with pytest.raises(ValueError, match=r"burn_windows\[0\]"):
        with_overrides(DEFAULT, {"burn_windows": [{"long": "1h"}]})
    bad = tmp_path / "bad.yml"
    bad.write_text("colour: red\n")
    assert main(["--config", str(bad), "--check"]) == 2
    assert "colour: unknown key" in capsys.readouterr().err


def test_generated_files_are_the_rules_four_dashboards_and_the_prometheus_rule() -> None:
    assert sorted(str(p) for p in generated_files()) == [
        "alerts/streamobs.rules.yml",
        "dashboards/streamobs-gpu.json",
        "dashboards/streamobs-probes.json",
        "dashboards/streamobs-slo.json",
        "dashboards/streamobs-vllm.json",
        "deploy/kubernetes/prometheusrule.yaml",
    ]
