"""The fleet path end to end: a real Prometheus drives ``/probe`` for 200 targets through
2 ``streamobs run`` replicas, sharded with hashmod as deploy/kubernetes/fleet/ shows.

The 200 targets are one simulator behind 200 URL paths (``/t17`` serves as ``/``), and each
replica sends its own header (credentials go to the simulator's host only), so the
simulator sees which replica probed which target. Prometheus runs the shipped scrape
config and rule, with loopback addresses and shorter intervals (the rule's ``for`` too;
the shipped 5m is promtool-tested below).
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from streamobs.config import parse_config
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, require_binary
from tests.prometheus_server import LOOPBACK, Prometheus, _Process, wait_until
from tests.test_deploy_lint import deploy_tool

FLEET = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "fleet"
LINT = FLEET.parent.parent / "lint"
TARGETS = 200
REPLICAS = 2
SCRAPE = "2s"
ALERT = "StreamobsFleetShardProbesAbsent"


def shipped_rules() -> dict[str, Any]:
    rule: dict[str, Any] = yaml.safe_load((FLEET / "prometheusrule.yaml").read_text())
    return {"groups": rule["spec"]["groups"]}


def shipped_replica_config() -> dict[str, Any]:
    configmap = yaml.safe_load((FLEET / "configmap.yaml").read_text())
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["streamobs.yml"])
    return config


@pytest.mark.parametrize("version", ["1.31.0", "1.37.0"])
def test_the_fleet_manifests_validate_strictly(version: str) -> None:
    # `make lint-deploy` validates this folder with the one above; this folder alone here.
    proc = subprocess.run(
        [deploy_tool("python"), str(LINT / "manifests.py"), "--kubernetes-version", version,
         str(FLEET)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "StatefulSet/streamobs-fleet" in proc.stdout
    assert "0 failed" in proc.stdout


def test_the_shipped_replica_config_loads() -> None:
    config = parse_config(shipped_replica_config())
    assert "default" in config.modules


def series(job: str, instance: str, values: str) -> dict[str, str]:
    return {"series": f'up{{job="{job}",instance="http://{instance}"}}', "values": values}


def test_the_shipped_rule_fires_for_a_stopped_shard_only(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (tmp_path / "fleet.rules.yml").write_text(yaml.safe_dump(shipped_rules()))
    shard = "streamobs-fleet-shard-1"
    description = (
        f"2 target(s) of {shard} have had no /probe result for 5m: the replica serving "
        "that shard is down or refusing the scrapes (503: all its /probe slots busy)."
    )
    rule = shipped_rules()["groups"][0]["rules"][0]
    tests = {
        "rule_files": ["fleet.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("streamobs-fleet-shard-0", "a", "1x30"),
                    series(shard, "b", "1x4 0x25"),
                    series(shard, "c", "1x4 0x25"),
                    series(shard, "d", "1x30"),
                ],
                "alert_rule_test": [
                    # Down from minute 5: pending for 5m, so not yet at 9m.
                    {"eval_time": "9m", "alertname": ALERT, "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": ALERT,
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": shard, "severity": "critical"},
                                "exp_annotations": {
                                    **rule["annotations"],
                                    "description": description,
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "fleet.test.yml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run(
        [promtool, "test", "rules", "fleet.test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Seen:
    """Which replica asked for which target path, as the simulator saw it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replicas: dict[str, set[str]] = defaultdict(set)

    def add(self, target: str, replica: str) -> None:
        with self.lock:
            self.replicas[target].add(replica)

    def snapshot(self) -> dict[str, set[str]]:
        with self.lock:
            return {k: set(v) for k, v in self.replicas.items()}


class PathTargets:
    """The simulator's request handling, with ``/tN`` in front of every path taken off:
    one simulator answers as many targets as there are prefixes."""

    def __init__(self, app: Any, seen: Seen) -> None:
        self._app = app
        self._seen = seen

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        _, first, rest = (handler.path + "/").split("/", 2)
        if first.startswith("t") and first[1:].isdigit():
            handler.path = "/" + rest.rstrip("/") if rest != "/" else "/"
            if handler.command == "POST":
                self._seen.add(first, handler.headers.get("X-Replica", "none"))
        self._app.handle(handler)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


@pytest.fixture(scope="module")
def simulator() -> Iterator[tuple[Simulator, Seen]]:
    seen = Seen()
    with Simulator(SimulatorConfig(model="sim", ttft=0.005, itl=0.001)) as sim:
        # The one place this reaches inside the simulator: its server's request handler.
        server = sim._server
        server.app = PathTargets(server.app, seen)  # type: ignore[assignment]
        yield sim, seen


def target_urls(sim: Simulator) -> list[str]:
    return [f"{sim.url}/t{i}" for i in range(TARGETS)]


class Replica:
    def __init__(self, index: int, sim: Simulator, workdir: Path) -> None:
        self.index = index
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        config = shipped_replica_config()
        config["web"]["listen_address"] = self.address
        config["shutdown_grace"] = "2s"
        module = config["modules"]["default"]
        module["credential_hosts"] = [f"{LOOPBACK}:{sim.port}"]
        module["headers"] = {"X-Replica": str(index)}
        module["max_tokens"] = 4
        config["targets"][0]["url"] = f"{sim.url}/canary"
        path = workdir / f"replica-{index}.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"replica-{index}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamobs", "run", "--config", str(path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, 30, f"replica {index} to be ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"replica {self.index} exited:\n{self.log()}")
        try:
            url = f"http://{self.address}/readyz"
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def fleet_scrape_configs(sim: Simulator, replicas: list[Replica]) -> list[dict[str, Any]]:
    """The shipped jobs with loopback addresses and shorter intervals; nothing else."""
    shipped = yaml.safe_load((FLEET / "prometheus-sharded.yaml").read_text())["scrape_configs"]
    jobs = []
    for job in shipped:
        job = copy.deepcopy(job)
        job["scrape_interval"] = SCRAPE
        job["scrape_timeout"] = "1500ms"
        if job["job_name"] == "streamobs":
            job["static_configs"] = [{"targets": [r.address for r in replicas]}]
        else:
            shard = int(job["job_name"].rsplit("-", 1)[1])
            job["static_configs"] = [{"targets": target_urls(sim)}]
            (last,) = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
            last["replacement"] = replicas[shard].address
            modulus = {r["modulus"] for r in job["relabel_configs"] if "modulus" in r}
            assert modulus == {REPLICAS}
        jobs.append(job)
    return jobs


class FleetPrometheus(Prometheus):
    """Prometheus with a scrape config of our own (relabelling), same API helpers."""

    def __init__(self, binary: str, workdir: Path, config: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        _Process.__init__(
            self,
            "prometheus",
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--log.level=warn",
            ],
            workdir,
            port,
        )

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}


def test_two_replicas_probe_disjoint_shards_and_a_stopped_shard_alerts(
    simulator: tuple[Simulator, Seen], tmp_path: Path
) -> None:
    binary = require_binary("prometheus")
    sim, seen = simulator
    replicas = [Replica(i, sim, tmp_path) for i in range(REPLICAS)]
    try:
        rules = shipped_rules()
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = "6s"
        (tmp_path / "fleet.rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "fleet.rules.yml")],
            "scrape_configs": fleet_scrape_configs(sim, replicas),
        }
        with FleetPrometheus(binary, tmp_path / "prometheus", config) as prometheus:
            shards = 'job=~"streamobs-fleet-shard-[0-9]+"'
            wait_until(
                lambda: (
                    prometheus.value(f"count(streamobs_probe_success{{{shards}}} == 1)") == TARGETS
                ),
                90,
                "a successful probe of every target",
            )
            # Every target in exactly one shard, and both shards have some.
            per_target = prometheus.by(f"count by (instance) (up{{{shards}}})", "instance")
            assert len(per_target) == TARGETS and set(per_target.values()) == {1.0}
            per_shard = prometheus.by(f"count by (job) (up{{{shards}}})", "job")
            assert sum(per_shard.values()) == TARGETS
            assert all(n > TARGETS / 4 for n in per_shard.values()), per_shard
            # No gaps: some scrapes later, every target's every scrape in the window worked.
            wait_until(
                lambda: (
                    prometheus.value(f"count(min_over_time(up{{{shards}}}[10s]) == 1)") == TARGETS
                ),
                60,
                "10 s of unbroken scrapes of every target",
            )
            # Each replica probed only its own shard, as the targets saw it.
            job_of = {
                r["metric"]["instance"].rsplit("/", 1)[1]: r["metric"]["job"]
                for r in prometheus.query(f"up{{{shards}}}")
            }
            asked = seen.snapshot()
            assert set(job_of) <= set(asked)
            for target, job in job_of.items():
                assert asked[target] == {job.rsplit("-", 1)[1]}, (target, asked[target], job)
            # Nothing firing while both replicas serve.
            assert not [a for a in prometheus.api("alerts")["alerts"] if a["state"] != "inactive"]

            stopped = replicas[1]
            assert stopped.stop() == 0, stopped.log()
            gone = "streamobs-fleet-shard-1"
            expected = per_shard[gone]
            wait_until(
                lambda: prometheus.value(f'count(up{{job="{gone}"}} == 0)') == expected,
                30,
                "every scrape of the stopped replica's shard to fail",
            )
            # Its shard's probe series are gone (stale), the other shard's all still there.
            wait_until(
                lambda: prometheus.value(f'count(streamobs_probe_success{{job="{gone}"}})') is None,
                30,
                "the stopped shard's probe series to go stale",
            )
            kept = "streamobs-fleet-shard-0"
            assert (
                prometheus.value(f'count(streamobs_probe_success{{job="{kept}"}} == 1)')
                == (per_shard[kept])
            )

            def firing() -> list[dict[str, Any]]:
                alerts = prometheus.api("alerts")["alerts"]
                return [a for a in alerts if a["labels"]["alertname"] == ALERT]

            wait_until(
                lambda: any(a["state"] == "firing" for a in firing()), 60, f"{ALERT} to fire"
            )
            (alert,) = firing()
            assert alert["labels"]["job"] == gone
            assert float(alert["value"]) == expected
    finally:
        for replica in replicas:
            replica.stop()
