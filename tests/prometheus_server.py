"""Real Prometheus and Alertmanager for tests, on loopback ports in temporary directories.

Also a webhook receiver (what Alertmanager notifies) and a static /metrics server (series
the simulator cannot produce, such as a GPU's). Everything listens on 127.0.0.1 only,
and every process started here is stopped by its own handle.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import requests
import yaml

from tests.fixtures import free_port

LOOPBACK = "127.0.0.1"
_P = TypeVar("_P", bound="_Process")


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class _Process:
    """A server binary with its log in ``workdir``; ready once ``/-/ready`` answers 200."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, port: int) -> None:
        self.name = name
        self.url = f"http://{LOOPBACK}:{port}"
        self._log_path = workdir / f"{name}.log"
        self._log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            list(argv), cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(self._ready, 30, f"{name} to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self._proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log()}")
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._log.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class QueryError(AssertionError):
    pass


class Prometheus(_Process):
    """Prometheus scraping ``targets`` (job name to ``host:port`` list) every ``interval``
    and evaluating ``rule_files`` as often, optionally notifying an Alertmanager."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Mapping[str, Sequence[str]],
        rule_files: Iterable[Path] = (),
        alertmanager: str | None = None,
        interval: str = "1s",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                for job, hosts in targets.items()
            ],
        }
        if alertmanager is not None:
            host = alertmanager.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        super().__init__(
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

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise QueryError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) of ``expr`` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]


class Alertmanager(_Process):
    """Alertmanager with ``config`` (a parsed alertmanager.yml), clustering off."""

    def __init__(self, binary: str, workdir: Path, config: Mapping[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(dict(config)))
        port = free_port()
        super().__init__(
            "alertmanager",
            [
                binary,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                # Empty: no gossip listener on 0.0.0.0:9094, no peers.
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            workdir,
            port,
        )

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        response = requests.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=10)
        response.raise_for_status()

    def alerts(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/alerts", timeout=10)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts


class _Server:
    """A ThreadingHTTPServer on a loopback port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.port = int(self._server.server_address[1])
        self.host = f"{LOOPBACK}:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class WebhookReceiver(_Server):
    """Records every notification Alertmanager posts, with the path it was posted to."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def alerts(self, path: str) -> list[dict[str, Any]]:
        """Every alert notified to ``path``, in arrival order."""
        with self._lock:
            return [a for p, body in self.notifications if p == path for a in body["alerts"]]


class StaticMetrics(_Server):
    """Serves ``text`` as a Prometheus text exposition at /metrics."""

    def __init__(self, text: str) -> None:
        payload = text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = payload if self.path == "/metrics" else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)
