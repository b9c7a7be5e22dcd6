"""One registry for the life of the process: reloads keep unchanged targets counting, drop
removed ones, keep the status history; collector health from what was exported; shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamobs.collectors.engines.poller import EnginePoller
from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.probe.prober import run_probe
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, wait_for


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def target(name: str, url: str, **extra: object) -> dict[str, object]:
    return {"name": name, "url": url, "model": "sim", "interval": "100ms", "max_tokens": 4, **extra}


def config(url: str, *names: str) -> dict[str, object]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "2s",
        "collectors": {"gpu": {"enabled": False}},
        "targets": [target(n, url) for n in names],
    }


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.005, itl=0.002)) as sim:
        yield sim


def scrape(port: int) -> str:
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def attempts(text: str, name: str) -> float | None:
    return sample(text, "streamobs_probe_attempts_total", target=name)


def assert_reload_kept_and_dropped(port: int, reload: object) -> None:
    """Counting "kept" and "gone", reload with "gone" replaced by "new", then check."""
    wait_for(lambda: (attempts(scrape(port), "kept") or 0) >= 3)
    wait_for(lambda: (attempts(scrape(port), "gone") or 0) >= 1)
    before = attempts(scrape(port), "kept")
    assert before is not None
    assert callable(reload)
    reload()
    after = scrape(port)
    assert sample(after, "streamobs_config_last_reload_successful") == 1
    kept = attempts(after, "kept")
    assert kept is not None and kept >= before  # not reset to 0 or 1
    assert 'target="gone"' not in after  # every series of the removed target
    wait_for(lambda: (attempts(scrape(port), "new") or 0) >= 1)
    wait_for(lambda: (attempts(scrape(port), "kept") or 0) > kept)  # still counting
    page = requests.get(f"http://127.0.0.1:{port}/", timeout=10).text
    assert "kept" in page and "new" in page and "gone" not in page


def test_post_reload_keeps_unchanged_targets_and_their_history(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config(simulator.url, "kept", "gone")))
    d = Daemon(parse_config(config(simulator.url, "kept", "gone")), config_path=str(path))
    d.start()
    try:
        port = d.web.port

        def reload() -> None:
            history = next(s for s in d.runtime.status.snapshot() if s.target.name == "kept")
            path.write_text(yaml.safe_dump(config(simulator.url, "kept", "new")))
            response = requests.post(f"http://127.0.0.1:{port}/-/reload", timeout=10)
            assert (response.status_code, response.text) == (200, "reloaded\n")
            now = next(s for s in d.runtime.status.snapshot() if s.target.name == "kept")
            assert len(now.recent) >= len(history.recent) > 0  # the history stayed

        assert_reload_kept_and_dropped(port, reload)
    finally:
        d.stop()


def test_sighup_keeps_unchanged_targets_counting(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config(simulator.url, "kept", "gone")))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(path),
         "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(up)

        def reload() -> None:
            path.write_text(yaml.safe_dump(config(simulator.url, "kept", "new")))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: 'target="gone"' not in scrape(port))

        assert_reload_kept_and_dropped(port, reload)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


def test_last_value_gauges_appear_with_the_first_probe(simulator: Simulator) -> None:
    release = threading.Event()

    def held(spec: ProbeSpec) -> ProbeResult:
        release.wait(30)
        return run_probe(spec)

    d = Daemon(parse_config(config(simulator.url, "t")), probe=held)
    d.start()
    try:
        text = scrape(d.web.port)
        assert attempts(text, "t") == 0  # counters exist from the start, at 0
        for name in (
            "streamobs_probe_success",
            "streamobs_probe_last_run_timestamp_seconds",
            "streamobs_probe_burst_share_ratio",
        ):
            assert sample(text, name, target="t") is None, name  # no "failed in 1970"
        release.set()
        wait_for(lambda: sample(scrape(d.web.port), "streamobs_probe_success", target="t") == 1)
    finally:
        release.set()
        d.stop()


def test_a_collector_whose_export_raises_is_down_and_the_rest_is_whole(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config(simulator.url, "t")
    data["targets"] = [target("t", simulator.url, metrics_url=simulator.url + "/metrics")]
    d = Daemon(parse_config(data))
    d.start()
    try:
        port = d.web.port
        wait_for(
            lambda: (
                sample(scrape(port), "streamobs_collector_up", collector="vllm", target="t") == 1
            )
        )
        wait_for(lambda: (attempts(scrape(port), "t") or 0) >= 1)

        def broken(self: EnginePoller) -> object:
            raise RuntimeError("export broke")

        monkeypatch.setattr(EnginePoller, "export", broken)
        text = scrape(port)  # parses as a whole: every family well formed
        assert sample(text, "streamobs_collector_up", collector="vllm", target="t") == 0
        assert (attempts(text, "t") or 0) >= 1
        assert sample(text, "streamobs_config_last_reload_successful") == 1
        assert sample(text, "process_resident_memory_bytes") is not None
        assert "streamobs_engine_" not in text  # nothing half exported
        monkeypatch.undo()
        text = scrape(port)
        assert sample(text, "streamobs_collector_up", collector="vllm", target="t") == 1
    finally:
        d.stop()


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    # A server that accepts and never answers keeps a probe running for its whole timeout.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    data = config(url, "slow")
    data["shutdown_grace"] = "5m"
    data["targets"] = [target("slow", url, timeouts={"headers": "5m", "total": "10m"})]
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "run", "--config", str(path),
         "--listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(up)
        silent.settimeout(120)
        held, _ = silent.accept()  # a probe is in flight, waiting for headers that never come
        proc.send_signal(signal.SIGTERM)
        # The first signal waits for the probe (up to the 5 min grace); the second does not.
        wait_for(lambda: requests_refused(port))
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=30)
        silent.close()
    held.close()
    assert "second signal" in err and "Traceback" not in err


def requests_refused(port: int) -> bool:
    """True once the daemon is shutting down (its /readyz no longer answers 200)."""
    try:
        return not requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
    except requests.ConnectionError:
        return True
