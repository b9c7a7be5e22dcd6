"""Soak with faults: the daemon probing a simulator that cycles through every fault class,
while the vLLM metrics endpoint flaps and the OTLP endpoint is down about half the time.
A second target probes a hostile server (benchmarks/hostile.py: dripped headers, 1xx for
ever, JSON nested past the stack, a flood of tiny events, a decompression bomb, a status
line that is not HTTP) the whole time. Checks for thread and file-descriptor leaks, flat
and bounded RSS (peak reported), every fault counted in its class, every hostile mode
ending as a failure of the probe rather than of the daemon, export failures counted, and
/metrics answering throughout.

    python -m benchmarks.soak --duration 3600      # the hour-long run
    python -m benchmarks.soak --duration 22        # about the smoke run `make soak` runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.hostile import MODES as HOSTILE_MODES
from benchmarks.hostile import HostileServer
from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.simulator import Simulator, SimulatorConfig

# Simulator fault -> the outcome class the probe must count it under.
FAULT_OUTCOMES = {
    "http_500": "http_status",
    "http_429": "http_status",
    "error_event": "stream_error",
    "truncate": "truncated",
    "reset": "truncated",
    "stall": "timeout_first_token",
    "hang": "timeout_headers",
    "malformed": "malformed",
    "not_sse": "not_sse",
    "oversize": "too_large",
}
FLAP_MODES = ("ok", "http_500", "garbage", "hang", "down")


@dataclass
class SoakReport:
    duration_s: float
    probes: int
    outcomes: dict[str, float]
    missing_outcomes: list[str]
    threads_start: int
    threads_max: int
    threads_end: int
    fds_start: int
    fds_end: int
    rss_first_mb: float
    rss_last_mb: float
    rss_peak_mb: float
    metrics_answers: int
    metrics_failures: int
    metrics_slowest_s: float
    vllm_up_seen: list[float] = field(default_factory=list)
    otlp_failures: float = 0.0
    log_lines: int = 0  # warnings and errors logged: states are logged once per change
    phases: int = 0
    hostile_probes: int = 0
    hostile_outcomes: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            not self.missing_outcomes
            and self.metrics_failures == 0
            and self.threads_end <= self.threads_start + 4
            and self.fds_end <= self.fds_start + 8
            and self.rss_last_mb <= self.rss_first_mb * 1.25 + 5
            and self.rss_peak_mb <= self.rss_first_mb + 60
            and self.hostile_probes > 0
            and not self.hostile_outcomes.get("ok")
            and {0.0, 1.0} <= set(self.vllm_up_seen)
            and self.otlp_failures > 0
            and self.log_lines <= 6 * max(1, self.phases)
        )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _FlappingMetrics(ThreadingHTTPServer):
    """A vLLM /metrics endpoint that is by turns fine, failing, garbage, hanging, gone."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "ok"
        super().__init__(("127.0.0.1", 0), _FlapHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients giving up on a hanging or failing phase is the point of the exercise


class _FlapHandler(BaseHTTPRequestHandler):
    server: _FlappingMetrics

    def do_POST(self) -> None:
        # The OTLP/HTTP endpoint: reachable in the "ok" and "garbage" phases, failing,
        # hanging or gone in the others, so export is down about half the time.
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self._dropped():
            return
        status = 500 if self.server.mode == "http_500" else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _dropped(self) -> bool:
        """In the "down" and "hang" phases the request gets no answer at all."""
        if self.server.mode == "down":
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if self.server.mode == "hang":
            time.sleep(3)
            return True
        return False

    def do_GET(self) -> None:
        if self._dropped():
            return
        mode = self.server.mode
        if mode == "ok":
            body = requests.get(self.server.upstream, timeout=2).content
        elif mode == "garbage":
            body = b"\x00\x01 this is { not metrics\n"
        else:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fetch(url: str) -> tuple[bool, str | None]:
    """(whether /metrics answered at all, its text when it answered 200)."""
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return False, None
    return True, response.text if response.status_code == 200 else None


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def run_soak(duration: float, phase: float = 1.0) -> SoakReport:
    counter = _CountingHandler()
    logging.getLogger().addHandler(counter)
    try:
        report = _run_soak(duration, phase)
    finally:
        logging.getLogger().removeHandler(counter)
    report.log_lines = counter.count
    return report


def _run_soak(duration: float, phase: float) -> SoakReport:
    sim_config = SimulatorConfig(model="soak", ttft=0.01, itl=0.002, tokens=16, stall_seconds=5)
    # A small record store: the RSS figures are the daemon's, not the simulator's history.
    with Simulator(sim_config, records_kept=200) as sim, HostileServer() as hostile:
        flapping = _FlappingMetrics(sim.url + "/metrics")
        with _serving(flapping):
            config = parse_config(
                {
                    "web": {"listen_address": "127.0.0.1:0"},
                    "shutdown_grace": "3s",
                    "collectors": {"engines": {"timeout": "500ms"}, "gpu": {"enabled": False}},
                    "otlp": {
                        "enabled": True,
                        "protocol": "http/protobuf",
                        "endpoint": f"http://127.0.0.1:{flapping.server_address[1]}",
                        "export_interval": "500ms",
                        "timeout": "1s",
                        "traces": True,
                    },
                    "targets": [
                        {
                            "name": "soak",
                            "url": sim.url,
                            "model": "soak",
                            "interval": "100ms",
                            "max_tokens": 8,
                            "metrics_url": f"http://127.0.0.1:{flapping.server_address[1]}/",
                            "timeouts": {
                                "connect": "1s",
                                "headers": "500ms",
                                "first_token": "500ms",
                                "total": "2s",
                            },
                        },
                        {
                            "name": "hostile",
                            "url": hostile.url,
                            "model": "soak",
                            "interval": "200ms",
                            "max_tokens": 8,
                            "timeouts": {
                                "connect": "1s",
                                "headers": "1s",
                                "first_token": "1500ms",
                                "total": "2s",
                            },
                        },
                    ],
                }
            )
            daemon = Daemon(config)
            daemon.start()
            metrics_url = f"http://127.0.0.1:{daemon.web.port}/metrics"
            try:
                return _drive(daemon, sim, flapping, hostile, metrics_url, duration, phase)
            finally:
                daemon.stop()


def _drive(
    daemon: Daemon,
    sim: Simulator,
    flapping: _FlappingMetrics,
    hostile: HostileServer,
    metrics_url: str,
    duration: float,
    phase: float,
) -> SoakReport:
    faults = list(FAULT_OUTCOMES)
    started = time.monotonic()
    warm = started + min(2.0, duration / 5)
    threads_start = fds_start = 0
    threads_max = 0
    rss: list[tuple[float, float]] = []
    answers = failures = 0
    slowest = 0.0
    vllm_up: set[float] = set()
    step = 0
    text = ""
    # Every fault gets its phase even when a loaded machine stretched the phases past the
    # duration (a fetch of /metrics may take longer than a phase).
    while (now := time.monotonic()) - started < duration or step < 2 * len(faults):
        # Every other phase is clean, so recovery is exercised as much as failure.
        fault = faults[(step // 2) % len(faults)] if step % 2 else None
        changes = {f"p_{name}": 0.0 for name in faults}
        if fault:
            changes[f"p_{fault}"] = 1.0
        sim.reconfigure(**changes)
        flapping.mode = FLAP_MODES[step % len(FLAP_MODES)]
        hostile.mode = HOSTILE_MODES[step % len(HOSTILE_MODES)]
        phase_end = now + phase
        while time.monotonic() < phase_end:
            asked = time.perf_counter()
            answered, fetched = _fetch(metrics_url)
            answers += answered
            if fetched is None:
                failures += 1
            else:
                text = fetched
                vllm_up.update(v for _, v in _samples(text, "streamobs_collector_up"))
            slowest = max(slowest, time.perf_counter() - asked)
            if time.monotonic() >= warm:
                if not threads_start:
                    threads_start, fds_start = threading.active_count(), _fds()
                threads_max = max(threads_max, threading.active_count())
                rss.append((time.monotonic(), _rss_mb()))
            time.sleep(0.2)
        step += 1
    sim.reconfigure(**{f"p_{name}": 0.0 for name in faults})
    flapping.mode = "ok"
    time.sleep(2.5)  # let stalled probes and hanging scrapes reach their deadlines
    # The counts after them (the last fetch above may predate the last phase's probes);
    # without an answer, the loop's last one stays the source of the counts.
    answered, fetched = _fetch(metrics_url)
    answers += answered
    if fetched is None:
        failures += 1
    else:
        text = fetched
    outcomes: dict[str, float] = {}
    hostile_outcomes: dict[str, float] = {}
    for labels, value in _samples(text, "streamobs_probe_failures_total"):
        into = hostile_outcomes if labels["target"] == "hostile" else outcomes
        into[labels["outcome"]] = into.get(labels["outcome"], 0) + value
    attempts = sum(
        v for labels, v in _samples(text, "streamobs_probe_attempts_total")
        if labels["target"] != "hostile"
    )  # fmt: skip
    hostile_attempts = sum(
        v for labels, v in _samples(text, "streamobs_probe_attempts_total")
        if labels["target"] == "hostile"
    )  # fmt: skip
    hostile_failures = sum(hostile_outcomes.values())
    if hostile_attempts > hostile_failures:
        hostile_outcomes["ok"] = hostile_attempts - hostile_failures
    third = max(1, len(rss) // 3)
    return SoakReport(
        duration_s=round(time.monotonic() - started, 1),
        probes=int(attempts),
        outcomes=outcomes,
        missing_outcomes=sorted(
            {o for f, o in FAULT_OUTCOMES.items() if not outcomes.get(o)}
            if len(faults) * 2 * phase <= duration
            else set()
        ),
        threads_start=threads_start,
        threads_max=threads_max,
        threads_end=threading.active_count(),
        fds_start=fds_start,
        fds_end=_fds(),
        rss_first_mb=round(statistics.median(v for _, v in rss[:third]), 1) if rss else 0.0,
        rss_last_mb=round(statistics.median(v for _, v in rss[-third:]), 1) if rss else 0.0,
        rss_peak_mb=round(max(v for _, v in rss), 1) if rss else 0.0,
        metrics_answers=answers,
        metrics_failures=failures,
        metrics_slowest_s=round(slowest, 3),
        vllm_up_seen=sorted(vllm_up),
        otlp_failures=sum(v for _, v in _samples(text, "streamobs_otlp_export_failures_total")),
        phases=step,
        hostile_probes=int(hostile_attempts),
        hostile_outcomes={k: v for k, v in hostile_outcomes.items() if v},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--phase", type=float, default=5.0, help="seconds per fault phase")
    args = parser.parse_args()
    report = run_soak(args.duration, args.phase)
    print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
