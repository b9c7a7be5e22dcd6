"""Deployment files: the systemd unit verifies, manifests hold what a restricted cluster
requires, example configs load, and the image runs as non-root without build tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamobs.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
KUBE = ROOT / "deploy" / "kubernetes"


def unit_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in (SYSTEMD / "streamobs.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_systemd_unit_is_hardened() -> None:
    d = unit_directives()
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
    }.items():
        assert d.get(key) == [value], key
    assert "RestrictAddressFamilies" in d and "MemoryMax" in d
    assert d["LoadCredential"] == ["vllm-key:/etc/streamobs/vllm-key"]
    assert any(v.startswith("/dev/nvidiactl") for v in d["DeviceAllow"])
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    streamobs = Path(sys.executable).with_name("streamobs")
    unit = tmp_path / "streamobs.service"
    text = (SYSTEMD / "streamobs.service").read_text()
    unit.write_text(text.replace("/usr/local/bin/streamobs", str(streamobs)))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    problems = [line for line in proc.stderr.splitlines() if "streamobs.service" in line]
    assert not problems, problems


def load_with_key(text: str, key_path: str, tmp_path: Path) -> Any:
    key = tmp_path / "key"
    key.write_text("sk-example\n")
    return parse_config(yaml.safe_load(text.replace(key_path, str(key))))


def test_systemd_example_config_loads(tmp_path: Path) -> None:
    text = (SYSTEMD / "streamobs.yml").read_text()
    config = load_with_key(text, "/run/credentials/streamobs.service/vllm-key", tmp_path)
    assert config.listen_address.startswith("127.0.0.1:")
    assert config.targets[0].api_key is not None


def manifests() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") not in (None, "Kustomization"):
                docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_manifests_parse_with_required_fields() -> None:
    docs = manifests()
    for name, doc in docs.items():
        assert doc.get("apiVersion"), name
        assert doc["metadata"].get("name"), name
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (KUBE / resource).is_file(), resource


def test_sidecar_is_restricted_and_probed() -> None:
    pod = manifests()["Deployment/vllm"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "streamobs")
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "streamobs-config"
    assert "secret" in volumes["vllm-key"] and mounts["vllm-key"]["readOnly"] is True


def test_configmap_config_loads_and_matches_the_pod(tmp_path: Path) -> None:
    docs = manifests()
    text = docs["ConfigMap/streamobs-config"]["data"]["streamobs.yml"]
    config = load_with_key(text, "/var/run/secrets/streamobs/vllm-key", tmp_path)
    port = int(config.listen_address.rpartition(":")[2])
    sidecar = next(
        c
        for c in docs["Deployment/vllm"]["spec"]["template"]["spec"]["containers"]
        if c["name"] == "streamobs"
    )
    assert sidecar["ports"][0]["containerPort"] == port
    monitor = docs["ServiceMonitor/streamobs"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_fleet_probing_example_shards_with_hashmod() -> None:
    scrape = yaml.safe_load((KUBE / "prometheus-fleet-probing.yaml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["metrics_path"] == "/probe"
    actions = [r.get("action", "replace") for r in job["relabel_configs"]]
    assert actions[:2] == ["hashmod", "keep"]


def test_dockerfile_final_stage_is_slim_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "AS build" in text and "COPY --from=build" in final
    user = [line for line in final.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, tool
    assert '"streamobs"' in final


def test_prometheus_rule_equals_the_shipped_rules() -> None:
    rule = manifests()["PrometheusRule/streamobs"]
    shipped = yaml.safe_load((ROOT / "alerts" / "streamobs.rules.yml").read_text())
    assert rule["spec"] == shipped
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert "prometheusrule.yaml" in (KUBE / "kustomization.yaml").read_text()
