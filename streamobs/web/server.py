"""The daemon's HTTP endpoints, on the standard library server (one thread per request)."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from streamobs.web.webconfig import WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


class Endpoints(Protocol):
    def metrics(self) -> Reply: ...
    def status_page(self) -> Reply: ...
    def ready(self) -> Reply: ...
    def reload_endpoint(self) -> Reply: ...
    def probe(self, query: dict[str, list[str]], scrape_timeout: float | None) -> Reply: ...


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"
    server_version = "streamobs"

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _route(self, method: str) -> None:
        if not self.server.web_config.authorised(self.headers.get("Authorization")):
            challenge = {"WWW-Authenticate": 'Basic realm="streamobs"'}
            self._send(Reply(401, b"Unauthorized\n"), challenge)
            return
        parts = urlsplit(self.path)
        endpoints = self.server.endpoints
        route = (method, parts.path)
        try:
            if route == ("GET", "/metrics"):
                reply = endpoints.metrics()
            elif route == ("GET", "/healthz"):
                reply = Reply(200, b"ok\n")
            elif route == ("GET", "/readyz"):
                reply = endpoints.ready()
            elif route == ("GET", "/"):
                reply = endpoints.status_page()
            elif route == ("GET", "/probe"):
                reply = endpoints.probe(parse_qs(parts.query), self._scrape_timeout())
            elif route == ("POST", "/-/reload"):
                reply = endpoints.reload_endpoint()
            elif parts.path in ("/metrics", "/healthz", "/readyz", "/", "/probe", "/-/reload"):
                reply = Reply(405, b"Method Not Allowed\n")
            else:
                reply = Reply(404, b"Not Found\n")
        except Exception:
            log.exception("%s %s failed", method, parts.path)
            reply = Reply(500, b"Internal Server Error\n")
        self._send(reply)

    def _scrape_timeout(self) -> float | None:
        raw = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        try:
            value = float(raw) if raw else None
        except ValueError:
            return None
        return value if value and value > 0 else None

    def _send(self, reply: Reply, headers: dict[str, str] | None = None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, endpoints: Endpoints, web_config: WebConfig) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.endpoints = endpoints
        self.web_config = web_config
        super().__init__((host, int(port)), _Handler)
        self._thread: threading.Thread | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the request's own thread, so a slow or
        # hostile client cannot stall the accept loop.
        request.settimeout(30)
        if self.web_config.tls is not None:
            request = self.web_config.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="web", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
