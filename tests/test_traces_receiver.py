"""The OTLP trace receiver on real sockets: both protocols, every bound, and forwarding
that is byte for byte and never blocks."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from streamobs.traces.forward import Destination, Forwarder, resolve_destination
from streamobs.traces.service import TracesService
from streamobs.traces.settings import TracesReceiverSettings
from tests.fixtures import FIXTURES, wait_for
from tests.otlp_receiver import black_hole, grpc_receiver

LLM_REQUEST = (FIXTURES / "otlp-traces" / "llm-request.pb").read_bytes()
STARTUP = (FIXTURES / "otlp-traces" / "startup-spans.pb").read_bytes()
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@contextmanager
def service(**settings: Any) -> Iterator[TracesService]:
    values: dict[str, Any] = {"http_address": "127.0.0.1:0", "grpc_address": "127.0.0.1:0"}
    values.update(settings)
    destination = values.pop("destination", None)
    traces = TracesService(TracesReceiverSettings(**values), destination)
    traces.start()
    try:
        yield traces
    finally:
        traces.stop()


def url(traces: TracesService, path: str = "/v1/traces") -> str:
    return f"http://127.0.0.1:{traces.receiver.http_port}{path}"


class RawBodies:
    """A downstream OTLP/HTTP receiver that keeps the exact bytes of every trace body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()


@contextmanager
def raw_http_receiver() -> Iterator[tuple[str, RawBodies]]:
    store = RawBodies()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with store.lock:
                # Trace bodies only (an OTLP endpoint also takes /v1/metrics).
                if self.path == "/v1/traces":
                    store.bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()


def test_http_accepts_vllm_bodies_and_joins_the_span() -> None:
    with service(join_wait=30.0) as traces:
        reply = requests.post(url(traces), data=LLM_REQUEST, headers=PROTOBUF, timeout=10)
        assert reply.status_code == 200
        assert reply.content == b""  # an empty ExportTraceServiceResponse
        assert requests.post(url(traces), data=STARTUP, headers=PROTOBUF, timeout=10).ok
        span = traces.wait_for("4bf92f3577b34da6a3ce929d0e0e4736", 10)
        assert span is not None and span.completion_tokens == 16
        stats = traces.stats()
        assert stats.receiver.requests == 2
        assert stats.receiver.llm_request_spans == 1
        assert stats.join.joined == 1


def test_gzip_bodies_are_inflated_within_the_bound() -> None:
    with service(max_request_bytes=4096) as traces:
        headers = {**PROTOBUF, "Content-Encoding": "gzip"}
        ok = requests.post(
            url(traces), data=gzip.compress(LLM_REQUEST), headers=headers, timeout=10
        )
        assert ok.status_code == 200
        bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))
        refused = requests.post(url(traces), data=bomb, headers=headers, timeout=10)
        assert refused.status_code == 413
        assert traces.stats().receiver.refused_too_large == 1


def test_bad_requests_are_refused_with_their_reason() -> None:
    with service(max_request_bytes=2048) as traces:

        def status(body: bytes, media: str = "application/x-protobuf", path: str = "") -> int:
            headers = {"Content-Type": media}
            target = url(traces, path) if path else url(traces)
            return requests.post(target, data=body, headers=headers, timeout=10).status_code

        assert status(b"{}", "application/json") == 415
        assert status(b"\xff" * 64) == 400
        assert status(LLM_REQUEST, path="/v1/metrics") == 404
        assert status(b"x" * 4096) == 413
        unknown = {**PROTOBUF, "Content-Encoding": "br"}
        refused = requests.post(url(traces), data=LLM_REQUEST, headers=unknown, timeout=10)
        assert refused.status_code == 400
        stats = traces.stats().receiver
        assert (stats.refused_bad, stats.refused_too_large, stats.requests) == (4, 1, 0)


def test_grpc_export_is_accepted_and_bounded() -> None:
    with service(max_request_bytes=2048) as traces:
        channel = grpc.insecure_channel(f"127.0.0.1:{traces.receiver.grpc_port}")
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(LLM_REQUEST)
        stub.Export(message, timeout=10)
        assert traces.wait_for("4bf92f3577b34da6a3ce929d0e0e4736", 10) is not None
        big = trace_service_pb2.ExportTraceServiceRequest()
        big.ParseFromString(LLM_REQUEST)
        big.resource_spans[0].scope_spans[0].spans[0].name = "x" * 4096
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(big, timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        channel.close()


def test_too_many_at_once_are_refused_at_once() -> None:
    with service(max_concurrency=1, read_timeout=30.0) as traces:
        port = traces.receiver.http_port
        assert port is not None
        # One client that sends its head and then nothing holds the only slot.
        holder = socket.create_connection(("127.0.0.1", port))
        holder.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        try:

            def refused() -> bool:
                reply = requests.post(url(traces), data=LLM_REQUEST, headers=PROTOBUF, timeout=10)
                return reply.status_code == 503

            wait_for(refused, timeout=20)
            assert traces.stats().receiver.refused_busy >= 1
        finally:
            holder.close()
        # The slot comes back once the holder has gone.
        wait_for(
            lambda: requests.post(url(traces), data=LLM_REQUEST, headers=PROTOBUF, timeout=10).ok,
            timeout=20,
        )


def test_forwarding_is_byte_for_byte_over_http() -> None:
    with raw_http_receiver() as (endpoint, downstream):
        destination = resolve_destination("http/protobuf", endpoint, None, 30.0)
        assert destination.endpoint == endpoint + "/v1/traces"
        with service(destination=destination) as traces:
            for body in (LLM_REQUEST, STARTUP):
                assert requests.post(url(traces), data=body, headers=PROTOBUF, timeout=10).ok
            headers = {**PROTOBUF, "Content-Encoding": "gzip"}
            gz = gzip.compress(LLM_REQUEST)
            assert requests.post(url(traces), data=gz, headers=headers, timeout=10).ok
            wait_for(lambda: len(downstream.bodies) == 3)
            # The ExportTraceServiceRequest bytes as received (inflated), in order.
            assert downstream.bodies == [LLM_REQUEST, STARTUP, LLM_REQUEST]
            # Counted once the downstream's reply is in, a moment after it has the body.

            def counted() -> bool:
                forward = traces.stats().forward
                return forward is not None and forward.forwarded == 3

            wait_for(counted)


def test_forwarding_over_grpc_sends_the_same_message() -> None:
    with grpc_receiver() as (endpoint, received):
        destination = Destination("grpc", endpoint, {"x-tenant": "a"}, 5.0)
        with service(destination=destination) as traces:
            assert requests.post(url(traces), data=LLM_REQUEST, headers=PROTOBUF, timeout=10).ok
            assert received.wait_for(lambda: len(received.traces) == 1, timeout=20)
            assert received.traces[0].SerializeToString() == LLM_REQUEST
            assert received.headers[0]["x-tenant"] == "a"


def test_dead_downstream_costs_a_bounded_queue_and_blocks_nothing() -> None:
    with black_hole() as endpoint:
        forwarder = Forwarder(Destination("http/protobuf", endpoint + "/v1/traces", {}, 60.0), 4)
        forwarder.start()
        submitted = threading.Event()

        def submit_many() -> None:
            for _ in range(200):
                forwarder.submit(LLM_REQUEST)
            submitted.set()

        thread = threading.Thread(target=submit_many, daemon=True)
        thread.start()
        # Each send waits up to 60 s for the black hole: had submit waited for the queue,
        # 200 of them could not have finished before the first send gave up.
        assert submitted.wait(50)
        stats = forwarder.stats()
        assert stats.dropped >= 200 - 4 - 1  # the queue, and the one being sent
        assert stats.forwarded == 0
        stopping = threading.Thread(target=forwarder.stop, args=(1.0,), daemon=True)
        stopping.start()
        stopping.join(30)
        assert not stopping.is_alive()
