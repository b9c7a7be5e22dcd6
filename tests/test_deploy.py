"""Deployment files: the systemd unit verifies, manifests hold what a restricted cluster
requires, example configs load, and the image runs as non-root without build tools."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml

from streamobs.config import parse_config
from tests.fixtures import free_port, require_binary, wait_for

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


def test_systemd_unit_sets_no_cpu_quota() -> None:
    # A quota throttles in 100 ms periods: the lateness that corrupts probe timings.
    assert "CPUQuota" not in unit_directives()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = require_binary("systemd-analyze")
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


def all_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(KUBE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") not in (None, "Kustomization")
    ]


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


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment/vllm"]["spec"]["template"]["spec"]
    return spec


def container(name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod_spec()["containers"] if c["name"] == name)
    return found


def test_sidecar_has_a_cpu_request_and_no_cpu_limit() -> None:
    resources = container("streamobs")["resources"]
    assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles the prober"
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_vllm_container_is_hardened() -> None:
    vllm = container("vllm")
    image = vllm["image"]
    tag = image.rpartition(":")[2]
    assert ":" in image and re.fullmatch(r"v\d+\.\d+\.\d+", tag), image
    sc = vllm["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert vllm["resources"]["limits"]["memory"]
    assert "cpu" not in vllm["resources"]["limits"]
    assert vllm["livenessProbe"]["httpGet"]["path"] == "/health"
    # The key comes from the mounted Secret file, never from the pod spec's env.
    for env in vllm.get("env", []):
        assert "secretKeyRef" not in env.get("valueFrom", {}), env["name"]
    assert "VLLM_API_KEY" in " ".join(vllm["command"])
    mounts = {m["name"]: m for m in vllm["volumeMounts"]}
    assert mounts["vllm-key"]["readOnly"] is True
    key_dir = mounts["vllm-key"]["mountPath"]
    assert f"{key_dir}/vllm-key" in " ".join(vllm["command"])


def test_pod_gets_no_token_no_service_links_and_a_group_for_the_key() -> None:
    pod = pod_spec()
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # else Kubernetes sets VLLM_PORT for the Service
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The key file is root-owned: readable by the non-root containers through fsGroup.
    assert (
        pod["securityContext"]["fsGroup"] == container("streamobs")["securityContext"]["runAsGroup"]
    )
    key = next(v for v in pod["volumes"] if v["name"] == "vllm-key")
    assert key["secret"]["defaultMode"] == 0o440


def test_every_object_is_in_the_example_namespace() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    assert namespace != "default"
    for path, doc in all_objects():
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == namespace
            assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        elif path.name != "prometheusrule.yaml":  # generated; the kustomization places it
            assert doc["metadata"]["namespace"] == namespace, path.name
    for resource in kustomization["resources"]:
        assert resource != "secret.example.yaml"
    names = {p.name for p, _ in all_objects()} - {"secret.example.yaml"}
    assert names == set(kustomization["resources"])


def test_network_policy_lets_only_prometheus_reach_the_sidecar_port() -> None:
    docs = manifests()
    policy = docs["NetworkPolicy/vllm"]["spec"]
    pod_labels = docs["Deployment/vllm"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    sidecar_port = container("streamobs")["ports"][0]
    rules = [
        r
        for r in policy["ingress"]
        if {"port": sidecar_port["name"], "protocol": "TCP"} in r["ports"]
    ]
    assert len(rules) == 1, "exactly one rule may open the sidecar's port (/metrics and /probe)"
    (peer,) = rules[0]["from"]  # one peer, both selectors in it: Prometheus pods in monitoring
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    for rule in policy["ingress"]:
        if rule is not rules[0]:
            ports = {p["port"] for p in rule["ports"]}
            assert sidecar_port["name"] not in ports and sidecar_port["containerPort"] not in ports


def test_disruption_budget_never_blocks_a_single_replica() -> None:
    docs = manifests()
    budget = docs["PodDisruptionBudget/vllm"]["spec"]
    pod_labels = docs["Deployment/vllm"]["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget


def test_every_checkov_skip_says_why() -> None:
    skips = 0
    for path, doc in all_objects():
        for key, value in doc["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                skips += 1
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check), (path.name, value)
                assert len(reason.split()) >= 5, (path.name, value)
    assert skips, "the example's known exceptions are written down where checkov reads them"


def healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK "))
    command: list[str] = json.loads(line.partition(" CMD ")[2])
    return command


def test_dockerfile_healthcheck_asks_the_daemon(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    exposed = re.search(r"^EXPOSE (\d+)$", text, re.M)
    default = re.search(r"^ENV STREAMOBS_HEALTHCHECK_URL=(\S+)$", text, re.M)
    assert exposed and default
    assert default.group(1) == f"http://127.0.0.1:{exposed.group(1)}/healthz"
    command = healthcheck_command()
    assert command[0] == "python"  # the slim image has no curl
    config = tmp_path / "streamobs.yml"
    config.write_text(
        yaml.safe_dump({"targets": [{"name": "t", "url": f"http://127.0.0.1:{free_port()}"}]})
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    env = {**os.environ, "STREAMOBS_HEALTHCHECK_URL": url}
    check = [sys.executable, *command[1:]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(config),
         "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def up() -> bool:
            try:
                return requests.get(url, timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up)
        assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0
    finally:
        proc.terminate()
        proc.wait(20)
    assert subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0


def test_vllm_command_hands_the_key_file_to_vllm(tmp_path: Path) -> None:
    """The container's shell line run as written, with a stand-in `vllm` that prints what
    it was given: the key arrives without its newline, the args unchanged, and a missing
    key file stops the container instead of starting vLLM without a key."""
    vllm = container("vllm")
    key_dir = next(m for m in vllm["volumeMounts"] if m["name"] == "vllm-key")["mountPath"]
    (tmp_path / "bin").mkdir()
    stand_in = tmp_path / "bin" / "vllm"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$*" "$VLLM_API_KEY"\n')
    stand_in.chmod(0o755)
    (tmp_path / "vllm-key").write_text("sk-example\n")
    command = [part.replace(key_dir, str(tmp_path)) for part in vllm["command"]]
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    proc = subprocess.run([*command, *vllm["args"]], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["serve " + " ".join(vllm["args"]), "sk-example"]
    (tmp_path / "vllm-key").unlink()
    proc = subprocess.run([*command, *vllm["args"]], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""
