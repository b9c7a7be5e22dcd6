"""The deploy scanners of `make lint-deploy` catch what they are there for: each one fails
a broken copy of the shipped files, so their passing on the real ones means something."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures import require_binary

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
LINT = ROOT / "deploy" / "lint"
DEPLOY_BIN = ROOT / ".venv-deploy" / "bin"


def deploy_tool(name: str) -> str:
    """A program of the scanners' virtualenv (`make lint-deploy` creates it)."""
    path = DEPLOY_BIN / name
    if path.exists():
        return str(path)
    message = f"{path} is missing: run `make lint-deploy` first"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def validate(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [deploy_tool("python"), str(LINT / "manifests.py"), "--kubernetes-version", "1.37.0",
         str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_shipped_manifests_validate_and_the_scrape_config_is_named_as_skipped() -> None:
    proc = validate(KUBE)
    assert proc.returncode == 0, proc.stdout
    assert "SKIP" in proc.stdout and "prometheus-fleet-probing.yaml" in proc.stdout
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert f"the monitoring.coreos.com/v1 {kind} CRD schema" in proc.stdout


def test_validation_rejects_unknown_fields_and_kinds_without_a_schema(tmp_path: Path) -> None:
    for name in ("service.yaml", "servicemonitor.yaml"):
        shutil.copy(KUBE / name, tmp_path / name)
    service = tmp_path / "service.yaml"
    service.write_text(service.read_text().replace("selector:", "selectr:"))
    monitor = tmp_path / "servicemonitor.yaml"
    monitor.write_text(monitor.read_text().replace("interval: 15s", "intervall: 15s"))
    (tmp_path / "other.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Other\nmetadata: {name: x}\n"
    )
    proc = validate(tmp_path)
    assert proc.returncode == 1
    assert "'selectr' was unexpected" in proc.stdout
    assert "'intervall' was unexpected" in proc.stdout
    assert "no schema for example.com/v1 Other" in proc.stdout
    assert "3 failed" in proc.stdout


def failed_checks(path: Path, framework: str) -> set[str]:
    proc = subprocess.run(
        [deploy_tool("checkov"), "-d" if path.is_dir() else "-f", str(path),
         "--framework", framework, "--skip-download",
         "--output", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    return {c["check_id"] for r in reports for c in r["results"]["failed_checks"]}


def test_checkov_fails_an_unhardened_vllm_container(tmp_path: Path) -> None:
    deployment = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    vllm["image"] = "vllm/vllm-openai:latest"
    del vllm["securityContext"], vllm["resources"]["limits"]["memory"]
    del pod["automountServiceAccountToken"]
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    failed = failed_checks(path, "kubernetes")
    # latest tag, privilege escalation, no memory limit, service-account token mounted
    assert {"CKV_K8S_14", "CKV_K8S_20", "CKV_K8S_13", "CKV_K8S_38"} <= failed, failed
    assert not failed_checks(KUBE, "kubernetes")  # the NetworkPolicy is checked with the pod


def test_checkov_wants_the_dockerfile_healthcheck(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK "))
    path = tmp_path / "Dockerfile"
    path.write_text("\n".join(lines[:start] + lines[start + 2 :]) + "\n")
    assert "CKV_DOCKER_2" in failed_checks(path, "dockerfile")
    assert not failed_checks(ROOT / "Dockerfile", "dockerfile")


def test_systemd_exposure_bound_fails_a_plain_unit(tmp_path: Path) -> None:
    require_binary("systemd-analyze")
    unit = tmp_path / "plain.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    script = [deploy_tool("python"), str(LINT / "systemd_exposure.py"), "--max", "2.0"]
    proc = subprocess.run([*script, str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAIL" in proc.stdout, proc.stdout
    shipped = str(ROOT / "deploy" / "systemd" / "streamobs.service")
    proc = subprocess.run([*script, shipped], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout
