"""The daemon's HTTP endpoints, on the standard library server.

Connections are served by a fixed pool of worker threads fed from a bounded queue: a flood
of clients costs queued sockets, then quick refusals, never a thread each. The listen
backlog is deep enough for a burst of scrapes and health checks arriving together.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from streamobs.web.origin import cross_site
from streamobs.web.webconfig import WebConfig

WORKERS = 32  # request threads; /probe takes at most max_concurrency of them
PENDING = 128  # accepted connections waiting for a worker; past this they are refused
BACKLOG = 128  # the kernel's queue of connections not yet accepted
IO_TIMEOUT = 10.0  # seconds a client may take per read or write (also the keep-alive idle)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)

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


# A web page the user happens to open must not trigger these: reload changes state, and a
# probe makes the daemon send requests.
_NOT_FROM_OTHER_SITES = {("POST", "/-/reload"), ("GET", "/probe")}


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
        if self.server.has_waiting():
            # Others wait for a worker: do not keep this one for an idle keep-alive.
            self.close_connection = True
        if route in _NOT_FROM_OTHER_SITES:
            why = cross_site(self.headers, self.server.web_config.tls is not None)
            if why is not None:
                log.warning("refused %s %s from another site: %s", method, parts.path, why)
                self._send(Reply(403, b"Forbidden: cross-site request\n"))
                return
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


class WebServer(HTTPServer):
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(
        self,
        address: str,
        endpoints: Endpoints,
        web_config: WebConfig,
        workers: int = WORKERS,
        pending: int = PENDING,
    ) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.endpoints = endpoints
        self.web_config = web_config
        self.workers = workers
        self._waiting: queue.Queue[tuple[Any, Any] | None] = queue.Queue(maxsize=pending)
        super().__init__((host, int(port)), _Handler)
        self._thread: threading.Thread | None = None
        self._pool: list[threading.Thread] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the accept loop: hand the connection to the pool, or refuse it now."""
        try:
            self._waiting.put_nowait((request, client_address))
        except queue.Full:
            log.warning("all %d request threads busy and %d waiting: refusing a connection",
                        self.workers, self._waiting.maxsize)  # fmt: skip
            self._refuse(request)

    def _refuse(self, request: Any) -> None:
        try:
            if self.web_config.tls is None:
                request.setblocking(False)
                request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def has_waiting(self) -> bool:
        return not self._waiting.empty()

    def _work(self) -> None:
        while True:
            item = self._waiting.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in a worker, so a slow or hostile client cannot
        # stall the accept loop.
        request.settimeout(IO_TIMEOUT)
        if self.web_config.tls is not None:
            request = self.web_config.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        for i in range(self.workers):
            worker = threading.Thread(target=self._work, name=f"web-{i}", daemon=True)
            self._pool.append(worker)
            worker.start()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="web", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Connections still waiting are closed; busy workers finish their request.
        while True:
            try:
                item = self._waiting.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        for _ in self._pool:
            try:
                self._waiting.put(None, timeout=0.5)
            except queue.Full:
                break  # workers are daemon threads: they end with the process
