"""The OTLP trace receiver: OTLP/HTTP protobuf (``POST /v1/traces``) and gRPC
(``TraceService/Export``), both feeding one ``accept(body)``.

Bounded everywhere: at most ``max_concurrency`` requests are handled at once per protocol
(more are refused at once: HTTP 503 / RESOURCE_EXHAUSTED, which OTLP exporters retry), a
body over ``max_request_bytes`` is refused before it is read (compressed bodies: before it
is inflated past the bound), and an HTTP body must arrive within ``read_timeout``. Nothing
here runs on a probe's thread or on ``/metrics``' path.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamobs.traces.decode import BadTraces, Decoded, decode_request
from streamobs.traces.settings import TracesReceiverSettings
from streamobs.traces.stats import ReceiverStats

log = logging.getLogger(__name__)

GRPC_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
HTTP_PATH = "/v1/traces"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n"
)


class TooLarge(ValueError):
    pass


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body inflated to at most ``limit`` bytes (TooLarge past it)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadTraces(f"unsupported Content-Encoding {encoding[:40]!r}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadTraces(f"cannot inflate the body: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"body inflates past {limit} bytes")
    return out


class TraceReceiver:
    """``on_body(body, decoded)`` gets every accepted request: the exact bytes of the
    ExportTraceServiceRequest and what they say."""

    def __init__(
        self, settings: TracesReceiverSettings, on_body: Callable[[bytes, Decoded], None]
    ) -> None:
        self.settings = settings
        self._on_body = on_body
        self._lock = threading.Lock()
        self._stats = ReceiverStats()
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._grpc_started = False
        self._bound = False
        self.grpc_port: int | None = None

    # -- the one entry -------------------------------------------------------------
    def accept(self, body: bytes) -> None:
        """Decode and hand on one request; BadTraces when it is not one."""
        if len(body) > self.settings.max_request_bytes:
            self.count(refused_too_large=1)
            raise TooLarge(f"over {self.settings.max_request_bytes} bytes")
        try:
            decoded = decode_request(body)
        except BadTraces:
            self.count(refused_bad=1)
            raise
        self.count(requests=1, spans=decoded.spans, llm_request_spans=len(decoded.llm_requests))
        self._on_body(body, decoded)

    def count(self, **add: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = ReceiverStats(
                **{name: getattr(s, name) + add.get(name, 0) for name in s.__slots__}
            )

    def stats(self) -> ReceiverStats:
        with self._lock:
            return self._stats

    # -- lifecycle ------------------------------------------------------------------
    def bind(self) -> None:
        """Take the listening sockets (once); OSError, or ValueError for a bad address,
        when they cannot be had."""
        settings = self.settings
        if self._bound:
            return
        try:
            if settings.http_address:
                host, port = split_address(settings.http_address)
                self._http = _HttpServer((host, port), self)
            if settings.grpc_address:
                self._bind_grpc(settings.grpc_address)
        except BaseException:
            self.stop()
            raise
        self._bound = True

    def start(self) -> None:
        """Bind if not yet bound, and serve."""
        self.bind()
        if self._http is not None and self._http_thread is None:
            self._http_thread = threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="traces-http",
                daemon=True,
            )
            self._http_thread.start()
        if self._grpc is not None and not self._grpc_started:
            self._grpc.start()
            self._grpc_started = True

    def _bind_grpc(self, address: str) -> None:
        import grpc  # type: ignore[import-untyped]

        split_address(address)
        limit = self.settings.max_concurrency
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limit, thread_name_prefix="traces-grpc"),
            maximum_concurrent_rpcs=limit,
            options=[
                ("grpc.max_receive_message_length", self.settings.max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )

        def export(body: bytes, context: Any) -> bytes:
            try:
                self.accept(body)
            except (BadTraces, TooLarge) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:200])
            return b""  # an empty ExportTraceServiceResponse: everything accepted

        # No deserializer: the handler gets the request's bytes as they came.
        handler = grpc.method_handlers_generic_handler(
            GRPC_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address} for OTLP gRPC")
        self._grpc = server
        self.grpc_port = port

    @property
    def http_port(self) -> int | None:
        return None if self._http is None else int(self._http.server_address[1])

    def stop(self, timeout: float = 2.0) -> None:
        if self._http is not None:
            if self._http_thread is not None:
                self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=min(timeout, 1.0)).wait(timeout)
            self._grpc = None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: TraceReceiver) -> None:
        self.receiver = receiver
        self.slots = threading.BoundedSemaphore(receiver.settings.max_concurrency)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.receiver.count(refused_busy=1)
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("OTLP HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.receiver.settings.read_timeout)

    def do_POST(self) -> None:
        receiver = self.server.receiver
        settings = receiver.settings
        self.close_connection = True  # one request per connection: no idle slot holders
        if self.path.split("?", 1)[0] != HTTP_PATH:
            receiver.count(refused_bad=1)
            self._reply(404, b"")
            return
        media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media != "application/x-protobuf":
            receiver.count(refused_bad=1)
            self._reply(415, b"only application/x-protobuf is accepted\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
            if length < 0:
                raise ValueError
        except ValueError:
            receiver.count(refused_bad=1)
            self._reply(411, b"Content-Length required\n", "text/plain")
            return
        if length > settings.max_request_bytes:
            receiver.count(refused_too_large=1)
            self._reply(413, b"request too large\n", "text/plain")
            return
        body = self._read(length, time.monotonic() + settings.read_timeout)
        if body is None:
            return
        try:
            plain = inflate(
                body, self.headers.get("Content-Encoding") or "", settings.max_request_bytes
            )
        except TooLarge:
            receiver.count(refused_too_large=1)
            self._reply(413, b"request too large\n", "text/plain")
            return
        except BadTraces as exc:
            receiver.count(refused_bad=1)
            self._reply(400, (str(exc)[:200] + "\n").encode(), "text/plain")
            return
        try:
            receiver.accept(plain)  # counts its own refusals
        except TooLarge:
            self._reply(413, b"request too large\n", "text/plain")
            return
        except BadTraces as exc:
            self._reply(400, (str(exc)[:200] + "\n").encode(), "text/plain")
            return
        self._reply(200, b"")  # an empty ExportTraceServiceResponse

    def _read(self, length: int, deadline: float) -> bytes | None:
        parts: list[bytes] = []
        left = length
        while left > 0:
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self.rfile.read1(min(left, 65536))
            except OSError:
                return None
            if not chunk:
                return None
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def _reply(
        self, status: int, body: bytes, content_type: str = "application/x-protobuf"
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass
