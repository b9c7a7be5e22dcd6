"""`streamobs run` end to end against the simulator: series, failure, reload, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, require_binary


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def config_for(url: str, **target: object) -> dict[str, object]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "2s",
        "targets": [{"name": "sim", "url": url, "interval": "200ms", "max_tokens": 8, **target}],
    }


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.02, itl=0.005)) as sim:
        yield sim


@pytest.fixture
def daemon(simulator: Simulator) -> Iterator[Daemon]:
    d = Daemon(parse_config(config_for(simulator.url)))
    d.start()
    yield d
    d.stop()


def metrics(d: Daemon) -> str:
    response = requests.get(f"http://127.0.0.1:{d.web.port}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def test_probe_histograms_fill_and_failure_shows_while_metrics_answer(
    simulator: Simulator, daemon: Daemon
) -> None:
    labels = {"target": "sim", "model": "sim"}
    wait_for(
        lambda: (sample(metrics(daemon), "streamobs_probe_ttft_seconds_count", **labels) or 0) >= 3
    )
    text = metrics(daemon)
    assert sample(text, "streamobs_probe_success", **labels) == 1
    assert (sample(text, "streamobs_probe_tpot_seconds_count", **labels) or 0) >= 3
    assert (sample(text, "streamobs_probe_output_tokens_total", **labels) or 0) >= 24
    assert sample(text, "streamobs_probe_ttft_seconds_bucket", le="2.0", **labels) is not None
    up = {"collector": "vllm", "target": "sim"}
    wait_for(lambda: sample(metrics(daemon), "streamobs_collector_up", **up) == 1)
    text = metrics(daemon)
    assert (sample(text, "vllm:generation_tokens_total", model_name="sim") or 0) > 0
    assert (sample(text, "streamobs_engine_generation_tokens_total", engine="sim") or 0) > 0
    simulator.stop()
    wait_for(lambda: sample(metrics(daemon), "streamobs_probe_success", **labels) == 0)
    wait_for(lambda: sample(metrics(daemon), "streamobs_collector_up", **up) == 0)
    # A probe in flight when the server went away fails in another class; the probes after
    # it find nobody listening.
    failures = "streamobs_probe_failures_total"
    wait_for(lambda: (sample(metrics(daemon), failures, outcome="connect", **labels) or 0) >= 1)
    assert sample(metrics(daemon), "streamobs_config_last_reload_successful") == 1


def test_health_status_page_and_404(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.web.port}"
    assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
    assert requests.get(base + "/readyz", timeout=5).status_code == 200
    wait_for(lambda: "ok" in requests.get(base + "/", timeout=5).text)
    page = requests.get(base + "/", timeout=5)
    assert page.headers["Content-Type"].startswith("text/html") and "sim" in page.text
    assert requests.get(base + "/nope", timeout=5).status_code == 404
    assert requests.post(base + "/metrics", timeout=5).status_code == 405


def test_blackbox_probe_endpoint_honours_scrape_timeout(
    simulator: Simulator, daemon: Daemon
) -> None:
    base = f"http://127.0.0.1:{daemon.web.port}/probe"
    ok = requests.get(base, params={"target": simulator.url}, timeout=10)
    assert ok.status_code == 200
    assert sample(ok.text, "streamobs_probe_success") == 1
    assert sample(ok.text, "streamobs_probe_phase_seconds", phase="first_token") is not None
    simulator.reconfigure(p_stall=1.0, stall_seconds=30)
    started = time.monotonic()
    slow = requests.get(
        base,
        params={"target": simulator.url},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
        timeout=10,
    )
    assert time.monotonic() - started < 1.6
    assert sample(slow.text, "streamobs_probe_success") == 0
    assert sample(slow.text, "streamobs_probe_outcome", outcome="timeout_first_token") == 1
    assert requests.get(base, timeout=5).status_code == 400
    bad = requests.get(base, params={"target": simulator.url, "module": "nope"}, timeout=5)
    assert bad.status_code == 400 and "unknown module" in bad.text


def test_reload_keeps_old_config_on_error(simulator: Simulator, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config_for(simulator.url)))
    d = Daemon(parse_config(config_for(simulator.url)), config_path=str(path))
    d.start()
    try:
        base = f"http://127.0.0.1:{d.web.port}"
        path.write_text("targets: [{name: sim, url: http://h, colour: red}]")
        response = requests.post(base + "/-/reload", timeout=5)
        assert response.status_code == 500 and "colour: unknown key" in response.text
        text = metrics(d)
        assert sample(text, "streamobs_config_last_reload_successful") == 0
        assert d.runtime.config.targets[0].name == "sim"
        good = config_for(simulator.url)
        good["targets"] = [{"name": "renamed", "url": simulator.url, "interval": "200ms"}]
        path.write_text(yaml.safe_dump(good))
        assert requests.post(base + "/-/reload", timeout=5).status_code == 200
        assert sample(metrics(d), "streamobs_config_last_reload_successful") == 1
        wait_for(
            lambda: (
                sample(metrics(d), "streamobs_probe_attempts_total", target="renamed") is not None
            )
        )
    finally:
        d.stop()


def _start_daemon(config: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(config),
         "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up)
    return proc, port


def test_sighup_reload_and_sigterm_during_a_probe(tmp_path: Path) -> None:
    import yaml

    # A slow first token keeps a probe in flight when SIGTERM arrives.
    with Simulator(SimulatorConfig(model="sim", ttft=30.0)) as sim:
        config = config_for(sim.url, interval="1s")
        path = tmp_path / "c.yml"
        path.write_text(yaml.safe_dump(config))
        proc, port = _start_daemon(path)
        try:
            path.write_text("targets: []")
            proc.send_signal(signal.SIGHUP)
            url = f"http://127.0.0.1:{port}/metrics"
            wait_for(
                lambda: sample(requests.get(url, timeout=2).text,
                               "streamobs_config_last_reload_successful") == 0
            )  # fmt: skip
            wait_for(lambda: any(not r.complete for r in sim.records()))
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
            _out, err = proc.communicate()
        assert code == 0, err
        assert elapsed < 2 + 1.5  # the 2 s grace, then out
        assert "Traceback" not in err
        # Leaving closed the probe's connection, so the server stopped generating.
        wait_for(lambda: all(r.complete for r in sim.records()))


def test_basic_auth_and_tls(simulator: Simulator, tmp_path: Path) -> None:
    openssl = require_binary("openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config: {cert_file: c.pem, key_file: k.pem}\n"
        f"basic_auth_users: {{prom: '{hashed}'}}\n"
    )
    config = config_for(simulator.url)
    config["web"] = {"listen_address": "127.0.0.1:0", "config_file": str(web)}
    d = Daemon(parse_config(config))
    d.start()
    try:
        url = f"https://127.0.0.1:{d.web.port}/metrics"
        ca = str(tmp_path / "c.pem")
        assert requests.get(url, verify=ca, timeout=5).status_code == 401
        assert requests.get(url, verify=ca, auth=("prom", "wrong"), timeout=5).status_code == 401
        good = requests.get(url, verify=ca, auth=("prom", "s3cret"), timeout=5)
        assert good.status_code == 200 and "streamobs_probe_attempts_total" in good.text
        with pytest.raises(requests.ConnectionError):
            requests.get(url.replace("https", "http"), timeout=5)
    finally:
        d.stop()


def _nvml_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_without_a_gpu_the_gpu_collector_is_down_and_the_rest_flows(tmp_path: Path) -> None:
    if _nvml_present():
        pytest.skip("this machine has an NVIDIA driver")
    import yaml

    with Simulator(SimulatorConfig(model="sim", ttft=0.02, itl=0.005)) as sim:
        path = tmp_path / "c.yml"
        path.write_text(yaml.safe_dump(config_for(sim.url)))
        proc, port = _start_daemon(path)
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            gpu = {"collector": "gpu", "target": ""}
            attempts = "streamobs_probe_attempts_total"
            wait_for(lambda: sample(requests.get(url, timeout=2).text, attempts) is not None)
            text = requests.get(url, timeout=2).text
            assert sample(text, "streamobs_collector_up", **gpu) == 0
            wait_for(lambda: sample(requests.get(url, timeout=2).text, "streamobs_collector_up",
                                    collector="vllm", target="sim") == 1)  # fmt: skip
            assert "streamobs_gpu_utilization_ratio{" not in text
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=15)
        assert "Traceback" not in err
        # One line about the missing library (at the default level), not a flood.
        assert len([line for line in err.splitlines() if "NVML" in line]) == 1, err


def test_no_collector_gpu_flag_removes_the_collector(simulator: Simulator, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config_for(simulator.url)))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(path),
         "--listen-address", f"127.0.0.1:{port}", "--no-collector.gpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def scraped() -> str:
            try:
                return requests.get(url, timeout=2).text
            except requests.ConnectionError:
                return ""

        wait_for(lambda: "streamobs_collector_up" in scraped())
        assert 'collector="gpu"' not in scraped()
        # A reload reads the file again; the flags still win over it (the file says
        # listen on port 0 and leaves the GPU collector on by default).
        reload = requests.post(f"http://127.0.0.1:{port}/-/reload", timeout=10)
        assert (reload.status_code, reload.text) == (200, "reloaded\n")
        text = scraped()
        assert sample(text, "streamobs_config_last_reload_successful") == 1
        assert "streamobs_collector_up" in text and 'collector="gpu"' not in text
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


def test_reload_applies_the_command_line_overrides_again(
    simulator: Simulator, tmp_path: Path
) -> None:
    import yaml

    from streamobs.config import Overrides, load_config

    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({**config_for(simulator.url), "collectors": {"gpu": {}}}))
    overrides = Overrides(listen_address="127.0.0.1:0", collectors={"gpu": False})
    d = Daemon(overrides.apply(load_config(path)), config_path=str(path), overrides=overrides)
    d.start()
    try:
        file_config = load_config(path)
        assert file_config.gpu.enabled is not False or "KUBERNETES_SERVICE_HOST" in os.environ
        assert d.reload() == (True, "reloaded")
        assert d.runtime.config.gpu.enabled is False and d.runtime.gpu is None
        assert d.runtime.config.listen_address == "127.0.0.1:0"
    finally:
        d.stop()


def test_a_probe_that_raises_does_not_stop_the_schedule(simulator: Simulator) -> None:
    from streamobs.probe.prober import run_probe

    calls: list[int] = []

    def flaky(spec: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return run_probe(spec)  # type: ignore[arg-type]

    d = Daemon(parse_config(config_for(simulator.url)), probe=flaky)  # type: ignore[arg-type]
    d.start()
    try:
        wait_for(lambda: (sample(metrics(d), "streamobs_probe_attempts_total") or 0) >= 2)
    finally:
        d.stop()
    assert len(calls) >= 3
