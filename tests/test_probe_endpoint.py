"""``/probe``: credentials only to the hosts a module names, bounded concurrency, a hard
deadline, and /metrics answering through a flood."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from streamobs.config import parse_config
from streamobs.credential_hosts import CredentialHostError, parse_host_pattern
from streamobs.daemon import Daemon
from streamobs.ondemand import ProbeGate
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from tests.echo_server import EchoServer
from tests.fixtures import wait_for

KEY = "sk-module-key-0123456789"
DEFAULT_KEY = "sk-default-key-9876543210"
HEADER = "azure-header-secret-5555"
PASSWORD = "basic-module-password-7777"
BASIC = "Basic " + base64.b64encode(f"probe:{PASSWORD}".encode()).decode()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _config(scheduled_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "1s",
        "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
        "targets": [{"name": "sched", "url": scheduled_url, "model": "m", "interval": "1h"}],
        **extra,
    }


@pytest.fixture
def credentialed(monkeypatch: pytest.MonkeyPatch, echo: EchoServer) -> Iterator[Daemon]:
    monkeypatch.setenv("TEST_DEFAULT_KEY", DEFAULT_KEY)
    monkeypatch.setenv("TEST_MODULE_KEY", KEY)
    config = _config(
        "http://127.0.0.1:9",
        target_defaults={"api_key_env": "TEST_DEFAULT_KEY", "headers": {"api-key": HEADER}},
        modules={
            "elsewhere": {
                "api_key_env": "TEST_MODULE_KEY",
                "credential_hosts": ["vllm.internal", "127.0.0.2", f"127.0.0.1:{echo.port + 1}"],
            },
            "loopback": {"api_key_env": "TEST_MODULE_KEY", "credential_hosts": ["127.0.0.*"]},
        },
    )
    d = Daemon(parse_config(config))
    d.start()
    yield d
    d.stop()


def _probe(d: Daemon, **params: str) -> requests.Response:
    url = f"http://127.0.0.1:{d.web.port}/probe"
    return requests.get(url, params=params, timeout=30)


def test_a_module_key_never_reaches_a_host_it_does_not_name(
    credentialed: Daemon, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for module in ("default", "elsewhere"):
        before = len(echo.headers_seen())
        response = _probe(credentialed, target=echo.url, module=module, debug="true")
        assert response.status_code == 200
        seen = echo.headers_seen()[before:]
        assert seen, "the probe reached the server"
        for headers in seen:
            assert "authorization" not in headers and "api-key" not in headers
            assert all(s not in str(headers) for s in (KEY, DEFAULT_KEY, HEADER))
        assert "Credentials: withheld" in response.text
        assert f"127.0.0.1:{echo.port}" in response.text
    assert sum("credentials withheld" in r.getMessage() for r in caplog.records) == 2
    # The named host does get them: the check above is not vacuous.
    before = len(echo.headers_seen())
    sent = _probe(credentialed, target=echo.url, module="loopback", debug="true")
    assert "Credentials: sent" in sent.text
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in echo.headers_seen()[before:])
    everything = "\n".join(r.getMessage() for r in caplog.records) + sent.text
    assert all(s[:8] not in everything for s in (KEY, DEFAULT_KEY, HEADER))
    text = requests.get(f"http://127.0.0.1:{credentialed.web.port}/metrics", timeout=5).text
    assert "streamobs_probe_endpoint_credentials_withheld_total 2.0" in text


def test_withheld_credentials_are_logged_once_per_host(
    credentialed: Daemon, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        assert _probe(credentialed, target=echo.url).status_code == 200
    assert sum("credentials withheld" in r.getMessage() for r in caplog.records) == 1


def test_a_module_basic_auth_never_reaches_a_host_it_does_not_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_DEFAULT_KEY", DEFAULT_KEY)
    monkeypatch.setenv("TEST_MODULE_PASSWORD", PASSWORD)
    basic = {"username": "probe", "password_env": "TEST_MODULE_PASSWORD"}
    with EchoServer(basic_auth=("probe", PASSWORD)) as echo:
        config = _config(
            "http://127.0.0.1:9",
            # The module's basic auth replaces the default API key: one Authorization header.
            target_defaults={"api_key_env": "TEST_DEFAULT_KEY"},
            modules={
                "elsewhere": {"basic_auth": basic, "credential_hosts": ["gw.internal"]},
                "loopback": {"basic_auth": basic, "credential_hosts": [f"127.0.0.1:{echo.port}"]},
            },
        )
        d = Daemon(parse_config(config))
        d.start()
        try:
            before = len(echo.headers_seen())
            # No model in the module: /v1/models is asked without the credentials too.
            withheld = _probe(d, target=echo.url, module="elsewhere", debug="true")
            seen_withheld = echo.headers_seen()[before:]
            before = len(echo.headers_seen())
            sent = _probe(d, target=echo.url, module="loopback", debug="true")
            seen_sent = echo.headers_seen()[before:]
            metrics = requests.get(f"http://127.0.0.1:{d.web.port}/metrics", timeout=5).text
        finally:
            d.stop()
    assert seen_withheld and all("authorization" not in h for h in seen_withheld)
    assert "Credentials: withheld" in withheld.text and "without its basic auth" in withheld.text
    assert "Outcome: http_status" in withheld.text  # the server wanted them: 401
    assert "Credentials: sent" in sent.text and "Outcome: ok" in sent.text
    assert [h.get("authorization") for h in seen_sent] == [BASIC, BASIC]  # models, then chat
    assert "streamobs_probe_endpoint_credentials_withheld_total 1.0" in metrics
    everything = "\n".join(r.getMessage() for r in caplog.records) + withheld.text + sent.text
    for secret in (PASSWORD, BASIC.split()[1], DEFAULT_KEY):
        assert secret[:8] not in everything


class BlockingProbe:
    """A stand-in prober: /probe requests block until released; counts how many run."""

    def __init__(self, probe_url_part: str) -> None:
        self.release = threading.Event()
        self._part = probe_url_part
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.calls = 0

    def __call__(self, spec: ProbeSpec) -> ProbeResult:
        on_demand = self._part in spec.target.request_url
        if on_demand:
            with self._lock:
                self.calls += 1
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            self.release.wait(60)
            with self._lock:
                self.running -= 1
        return ProbeResult(
            url=spec.target.request_url,
            endpoint=spec.target.endpoint,
            model=spec.model,
            outcome=Outcome.OK,
            start_ns=time.perf_counter_ns(),
            started_at=time.time(),
        )


def _discover(*args: object) -> str:
    return "m"


def test_200_concurrent_probes_never_exceed_max_concurrency_and_metrics_answer() -> None:
    blocking = BlockingProbe("ondemand.invalid")
    config = _config("http://127.0.0.1:9", max_concurrency=2)
    d = Daemon(parse_config(config), probe=blocking, discover=_discover)
    d.start()
    base = f"http://127.0.0.1:{d.web.port}"
    statuses: list[int | str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            status: int | str = requests.get(
                base + "/probe",
                params={"target": "http://ondemand.invalid:8000"},
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"},
                timeout=60,
            ).status_code
        except requests.ConnectionError:
            status = "refused"
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(200)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: blocking.running == 2)
        # Two probes run, two requests wait for a slot, every other one is turned away.
        wait_for(lambda: len(statuses) >= 196)
        for _ in range(20):
            scrape = requests.get(base + "/metrics", timeout=10)
            assert scrape.status_code == 200
            assert "streamobs_probe_endpoint_running 2.0" in scrape.text
        assert blocking.running == 2 and d.on_demand.gate.most_running == 2
    finally:
        blocking.release.set()
        for t in threads:
            t.join(60)
        d.stop()
    assert len(statuses) == 200
    assert blocking.most_running == 2
    assert statuses.count(200) == blocking.calls == 4
    assert statuses.count(503) + statuses.count("refused") == 196


def test_the_scrape_timeout_is_a_hard_deadline_and_the_slot_is_held_until_the_probe_ends() -> None:
    blocking = BlockingProbe("ondemand.invalid")
    d = Daemon(parse_config(_config("http://127.0.0.1:9")), probe=blocking, discover=_discover)
    d.start()
    try:
        # The stand-in ignores every timeout: only the endpoint's own deadline can answer.
        response = requests.get(
            f"http://127.0.0.1:{d.web.port}/probe",
            params={"target": "http://ondemand.invalid:8000", "debug": "1"},
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"},
            timeout=30,
        )
        assert response.status_code == 200
        assert "Outcome: timeout_total" in response.text
        assert "streamobs_probe_success 0.0" in response.text
        assert d.on_demand.gate.running == 1  # still running: its slot is still taken
        blocking.release.set()
        wait_for(lambda: d.on_demand.gate.running == 0)
    finally:
        blocking.release.set()
        d.stop()


def test_gate_refuses_beyond_slots_and_waiters() -> None:
    gate = ProbeGate(slots=1, waiting=1)
    assert gate.acquire(1)
    assert not gate.acquire(0)  # a slot would never free up in time
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(gate.acquire(30)))
    waiter.start()
    wait_for(lambda: gate._waiting == 1)
    assert not gate.acquire(30)  # the one waiting place is taken: refused at once
    gate.release()
    waiter.join(30)
    assert got == [True] and gate.running == 1 and gate.most_running == 1


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        ("vllm.internal", "vllm.internal", 8000, True),
        ("VLLM.internal", "vllm.internal", 443, True),
        ("vllm.internal:8000", "vllm.internal", 8000, True),
        ("vllm.internal:8000", "vllm.internal", 8001, False),
        ("*.inference.internal", "a.inference.internal", 80, True),
        ("*.inference.internal", "inference.internal.evil.example", 80, False),
        ("10.0.0.*", "10.0.0.7", 80, True),
        ("10.0.0.*", "10.0.1.7", 80, False),
        ("[::1]:8000", "::1", 8000, True),
        ("::1", "::1", 1, True),
        ("gpu-*:80*", "gpu-3", 8000, True),
    ],
)
def test_host_patterns(entry: str, host: str, port: int, allowed: bool) -> None:
    assert parse_host_pattern(entry).matches(host, port) is allowed


@pytest.mark.parametrize(
    "entry", ["", "http://h", "h/path", "h:port", "[::1", "[::1]x", 5, "user@h"]
)
def test_bad_host_patterns(entry: object) -> None:
    with pytest.raises(CredentialHostError):
        parse_host_pattern(entry)


def test_a_probe_that_raises_answers_500_and_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(spec: ProbeSpec) -> ProbeResult:
        raise RecursionError("a bug")

    d = Daemon(parse_config(_config("http://127.0.0.1:9")), probe=broken, discover=_discover)
    d.start()
    try:
        response = _probe(d, target="http://ondemand.invalid:8000")
        assert response.status_code == 500 and "internally" in response.text
        assert d.on_demand.gate.running == 0
        assert any("/probe of ondemand.invalid" in r.getMessage() for r in caplog.records)
    finally:
        d.stop()


def _daemon_side_connections(web_port: int, upstream_port: int) -> list[str]:
    """This process's TCP connections the daemon holds: accepted on its web port (the
    listener aside) or open to the upstream. The test client's own ends are not counted."""
    import os

    inodes = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    held = []
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode not in inodes or state == "0A":  # 0A: listening
                continue
            local_port, remote_port = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
            if local_port == web_port or remote_port == upstream_port:
                held.append(f"{local}->{remote} state {state}")
    return held


def test_a_dripping_server_costs_probe_no_thread_or_socket() -> None:
    # A server that sends one header byte every 0.2 s for ever: /probe still answers
    # within the scrape timeout, and afterwards the daemon holds no extra thread or socket.
    import socket as socket_module

    from tests.scripted_server import ScriptedServer

    def drip(conn: socket_module.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nx-slow: ")
        while True:
            time.sleep(0.2)
            conn.sendall(b"a")

    with ScriptedServer(drip) as server:
        upstream_port = int(server.url.rsplit(":", 1)[1])
        d = Daemon(parse_config(_config("http://127.0.0.1:9")))
        d.start()
        try:
            base = f"http://127.0.0.1:{d.web.port}"
            threads = threading.active_count()
            for _ in range(3):
                started = time.monotonic()
                response = requests.get(
                    base + "/probe",
                    params={"target": server.url, "model": "m"},
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": "2", "Connection": "close"},
                    timeout=30,
                )
                assert time.monotonic() - started < 2 + 1.0
                assert "probe_success 0" in response.text
            wait_for(
                lambda: (
                    threading.active_count() <= threads
                    and not _daemon_side_connections(d.web.port, upstream_port)
                )
            )
        finally:
            d.stop()
