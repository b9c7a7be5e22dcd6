"""The Simulator: an HTTP/1.1 server on its own threads, started and stopped from Python."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from streamobs.simulator import kernel_stamps
from streamobs.simulator.app import RECORDS_KEPT, SimulatorApp
from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.records import RequestRecord

_log = logging.getLogger(__name__)

# How long stop() waits for the threads serving requests to notice and return.
_STOP_JOIN_SECONDS = 5.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._app().handle(self)

    def do_POST(self) -> None:
        self._app().handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    def _app(self) -> SimulatorApp:
        assert isinstance(self.server, _Server)
        return self.server.app


class _Server(ThreadingHTTPServer):
    """Keeps track of live connections so stop() can end them and wait for their threads."""

    daemon_threads = True
    # socketserver's default of 5 overflows under a burst of concurrent probes: the kernel
    # then drops their requests and the client retransmits 200 ms later, a delay no real
    # vLLM (uvicorn's backlog is 2048) would add.
    request_queue_size = 1024

    def __init__(self, host: str, port: int, app: SimulatorApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self._connections_lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN, a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        # Without TCP_NODELAY, Nagle and delayed ACKs add gaps of ~40 ms between events.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kernel_stamps.enable(sock)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"streamobs-simulator-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client going away (reset, broken pipe) is normal traffic, not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            _log.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])
            return
        _log.exception("error while serving %s", client_address)

    def end_connections(self) -> list[threading.Thread]:
        """Shut down every live connection; returns the threads serving them."""
        with self._connections_lock:
            live = list(self._connections.items())
        for _, sock in live:
            with contextlib.suppress(OSError):  # already closed by its own thread
                sock.shutdown(socket.SHUT_RDWR)
        return [thread for thread, _ in live]


class Simulator:
    """An OpenAI-compatible streaming server shaped like vLLM 0.32, with fault knobs.

    The port is bound on construction (port 0 picks a free one); start() serves in a
    background thread. Every request is recorded with perf_counter_ns() write stamps.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        records_kept: int = RECORDS_KEPT,
    ) -> None:
        self._app = SimulatorApp(config, seed, records_kept)
        self._server = _Server(host, port, self._app)
        self._host = host
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def start(self) -> Simulator:
        """Serve in a background thread; returns self. Calling it again does nothing."""
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("this Simulator has been stopped; create a new one")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name="streamobs-simulator",
                    daemon=True,
                )
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until stop() is called (from another thread or a signal handler)."""
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop accepting, end every connection and wait for their threads. Idempotent."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._app.stopping.set()
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join()
            self._server.server_close()
            deadline = time.monotonic() + _STOP_JOIN_SECONDS
            for thread in self._server.end_connections():
                thread.join(max(0.0, deadline - time.monotonic()))
            self._app.stop_spans()
            self._stopped.set()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def config(self) -> SimulatorConfig:
        return self._app.config

    @property
    def registry(self) -> CollectorRegistry:
        """The dedicated registry behind GET /metrics."""
        return self._app.metrics.registry

    def reconfigure(self, **changes: Any) -> SimulatorConfig:
        """Change settings for requests that arrive from now on; ValueError if invalid."""
        return self._app.reconfigure(changes)

    def sent_span_bodies(self) -> list[bytes]:
        """The last export bodies (ExportTraceServiceRequest bytes) the endpoint took."""
        return self._app.sent_span_bodies()

    def flush_spans(self) -> None:
        """Send the llm_request spans waiting for their batch now."""
        self._app.flush_spans()

    def request_log(self, response_id: str, wait: float = 1.0) -> RequestRecord | None:
        """The record of one response, None if unknown (or among the oldest dropped).

        If that request is still being served, waits up to `wait` seconds for it to end,
        so a client that has just read [DONE] gets the final stamps; wait=0 returns the
        record as it stands.
        """
        return self._app.records.get(response_id, wait)

    def records(self) -> list[RequestRecord]:
        """Every record kept (the last 10 000 requests), oldest first."""
        return self._app.records.all()
