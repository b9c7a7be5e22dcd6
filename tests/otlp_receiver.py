"""A real OTLP receiver for tests, on loopback and ephemeral ports.

gRPC: the official ``opentelemetry.proto.collector.{metrics,trace}.v1`` services. HTTP: POSTs
of ``application/x-protobuf`` to ``/v1/metrics`` and ``/v1/traces`` (gzip or deflate
bodies accepted). Every request is decoded with the official ``opentelemetry-proto``
messages and kept for assertions. Also: a port that refuses connections, and one that
accepts them and never answers.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest
TraceRequest = trace_service_pb2.ExportTraceServiceRequest


class Received:
    """Decoded requests, in arrival order, with a way to wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.metrics: list[MetricsRequest] = []
        self.traces: list[TraceRequest] = []
        self.headers: list[dict[str, str]] = []

    def add(self, request: MetricsRequest | TraceRequest, headers: dict[str, str]) -> None:
        with self._cond:
            if isinstance(request, MetricsRequest):
                self.metrics.append(request)
            else:
                self.traces.append(request)
            self.headers.append(headers)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def clear(self) -> None:
        with self._cond:
            self.metrics.clear()
            self.traces.clear()
            self.headers.clear()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: MetricsRequest, context: Any) -> Any:
        self._received.add(request, dict(context.invocation_metadata()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: TraceRequest, context: Any) -> Any:
        self._received.add(request, dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    """Yields the endpoint (``http://127.0.0.1:PORT``: plaintext) and what arrives."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
    add_traces = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
    add_metrics(_MetricsService(received), server)  # type: ignore[no-untyped-call]
    add_traces(_TraceService(received), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


_HTTP_MESSAGES: dict[str, tuple[type[MetricsRequest] | type[TraceRequest], Any]] = {
    "/v1/metrics": (MetricsRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "/v1/traces": (TraceRequest, trace_service_pb2.ExportTraceServiceResponse),
}


def _decode_body(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:
        messages = _HTTP_MESSAGES.get(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if messages is None:
            self._reply(404, b"")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self._reply(415, b"")
            return
        request_type, response_type = messages
        request = request_type()
        request.ParseFromString(_decode_body(body, self.headers.get("Content-Encoding", "")))
        self.received.add(request, {k.lower(): v for k, v in self.headers.items()})
        self._reply(200, response_type().SerializeToString())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_receiver(port: int = 0) -> Iterator[tuple[str, Received]]:
    """Yields the base endpoint (``http://127.0.0.1:PORT``) and what arrives."""
    received = Received()
    handler = type("Handler", (_OtlpHttpHandler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="otlp-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def receiver(protocol: str) -> Iterator[tuple[str, Received]]:
    with grpc_receiver() if protocol == "grpc" else http_receiver() as found:
        yield found


def closed_port() -> str:
    """An endpoint nothing listens on: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (nor reads much)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, name="black-hole", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
