"""vLLM's per-request ``llm_request`` span, as the simulator sends it.

Shaped like the capture (``tests/data/vllm-0.32-cpu/otlp-traces/``): one SERVER span per
request in the trace of the incoming ``traceparent`` (its span id the parent; no span when
the caller's flags say not sampled), from a resource with
``vllm.instrumenting_module_name=vllm.llm_engine``, scope ``vllm.tracing.otel``, the
``gen_ai.latency.*`` and ``gen_ai.usage.*`` attributes in vLLM's order, exported in
batches the way the SDK's BatchSpanProcessor does (every ``batch_delay`` seconds, or
sooner once 512 are waiting) as OTLP/HTTP protobuf or gRPC. The values are the
simulator's own stamps of the request, so a test can compare them exactly.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from streamobs.http import stamps
from streamobs.http.client import Request, Timeouts, fetch
from streamobs.http.errors import HTTPFailure
from streamobs.probe.tracecontext import parse_traceparent

log = logging.getLogger(__name__)

SCOPE = "vllm.tracing.otel"
MAX_BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE's default
MAX_QUEUE = 2048  # OTEL_BSP_MAX_QUEUE_SIZE's default: more are dropped
EXPORT_TIMEOUT = 10.0
KEEP_BODIES = 1000
# SpanFlags: HAS_IS_REMOTE, and IS_REMOTE when the parent came from another process.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_SDK_VERSION = "1.45.2"  # what the capture's resource says
_INSTANCE_ID = str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class RequestSpan:
    """What the span of one served request says (seconds from arrival, vLLM's names)."""

    traceparent: str | None
    request_id: str
    received_unix_ns: int
    finished_unix_ns: int
    time_to_first_token: float
    e2e: float
    time_in_queue: float
    prompt_tokens: int
    completion_tokens: int
    time_in_model_prefill: float
    time_in_model_decode: float
    max_tokens: int | None
    temperature: float | None

    @property
    def time_in_model_inference(self) -> float:
        return self.time_in_model_prefill + self.time_in_model_decode

    def attributes(self) -> dict[str, float | int | str]:
        """In the order vLLM sets them."""
        values: dict[str, float | int | str] = {
            "gen_ai.latency.time_to_first_token": self.time_to_first_token,
            "gen_ai.latency.e2e": self.e2e,
            "gen_ai.latency.time_in_queue": self.time_in_queue,
            "gen_ai.usage.prompt_tokens": self.prompt_tokens,
            "gen_ai.usage.completion_tokens": self.completion_tokens,
            "gen_ai.latency.time_in_model_prefill": self.time_in_model_prefill,
            "gen_ai.latency.time_in_model_decode": self.time_in_model_decode,
            "gen_ai.latency.time_in_model_inference": self.time_in_model_inference,
            "gen_ai.request.id": self.request_id,
            "gen_ai.request.top_p": 1.0,
        }
        if self.max_tokens is not None:
            values["gen_ai.request.max_tokens"] = self.max_tokens
        values["gen_ai.request.temperature"] = (
            1.0 if self.temperature is None else float(self.temperature)
        )
        values["gen_ai.request.n"] = 1
        return values


def _value(value: float | int | str) -> AnyValue:
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(double_value=value)


def resource() -> Resource:
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or "unknown_service:python3"
    attributes = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _SDK_VERSION,
        "service.instance.id": _INSTANCE_ID,
        "vllm.instrumenting_module_name": "vllm.llm_engine",
        "vllm.process_id": str(os.getpid()),
        "service.name": service,
    }
    return Resource(attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()])


def build_span(request: RequestSpan) -> Span | None:
    """The request's span, or None when its caller asked for no sampling."""
    parent = parse_traceparent(request.traceparent) if request.traceparent else None
    if parent is not None and not parent[2]:
        return None
    if parent is not None:
        trace_id, parent_id = bytes.fromhex(parent[0]), bytes.fromhex(parent[1])
        flags = _HAS_IS_REMOTE | _IS_REMOTE
    else:
        trace_id, parent_id, flags = secrets.token_bytes(16), b"", _HAS_IS_REMOTE
    return Span(
        trace_id=trace_id,
        span_id=secrets.token_bytes(8),
        parent_span_id=parent_id,
        name="llm_request",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=request.received_unix_ns,
        end_time_unix_nano=request.finished_unix_ns,
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in request.attributes().items()],
        status=Status(),
        flags=flags,
    )


def export_request(spans: list[Span]) -> ExportTraceServiceRequest:
    scope = ScopeSpans(spans=spans)
    scope.scope.name = SCOPE
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource(), scope_spans=[scope])]
    )


class SpanSender:
    """Batches spans for one endpoint on a thread of its own; ``add`` never blocks."""

    def __init__(self, endpoint: str, protocol: str, batch_delay: float) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.batch_delay = batch_delay
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sent = 0  # export requests the endpoint accepted
        # The bodies it accepted, newest last (tests compare what a receiver forwards).
        self.bodies: deque[bytes] = deque(maxlen=KEEP_BODIES)
        self.failed = 0
        self.dropped = 0
        self._grpc: Any = None
        self._thread = threading.Thread(target=self._run, name="sim-spans", daemon=True)
        self._thread.start()

    def add(self, span: Span) -> None:
        with self._lock:
            if len(self._spans) >= MAX_QUEUE:
                self.dropped += 1
                return
            self._spans.append(span)
            full = len(self._spans) >= MAX_BATCH
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Export whatever is waiting now (on the sender's thread)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.batch_delay)
            self._wake.clear()
            self._export_waiting()
        self._export_waiting()

    def _export_waiting(self) -> None:
        while True:
            with self._lock:
                batch, self._spans = self._spans[:MAX_BATCH], self._spans[MAX_BATCH:]
            if not batch:
                return
            body = export_request(batch).SerializeToString()
            try:
                self._send(body)
            except Exception as exc:
                self.failed += 1
                log.debug("simulator span export to %s failed: %s", self.endpoint, exc)
            else:
                self.sent += 1
                self.bodies.append(body)

    def _send(self, body: bytes) -> None:
        if self.protocol == "grpc":
            self._send_grpc(body)
            return
        timeouts = Timeouts(EXPORT_TIMEOUT, EXPORT_TIMEOUT, EXPORT_TIMEOUT)
        headers = {"Content-Type": "application/x-protobuf", "User-Agent": "OTel-OTLP-Exporter"}
        try:
            response, _ = fetch(
                Request("POST", self.endpoint, headers, body), timeouts, max_bytes=65536
            )
        except HTTPFailure as failure:
            raise OSError(failure.message) from None
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")

    def _send_grpc(self, body: bytes) -> None:
        import grpc  # type: ignore[import-untyped]

        if self._grpc is None:
            target = self.endpoint.split("://", 1)[-1].rstrip("/")
            self._grpc = grpc.insecure_channel(target)
        export = self._grpc.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        )
        export(body, timeout=EXPORT_TIMEOUT)

    def stop(self, timeout: float = 2.0) -> None:
        """Export what is waiting, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._grpc is not None:
            self._grpc.close()


def unix_ns_of(perf_ns: int) -> int:
    """A perf_counter_ns stamp as wall-clock nanoseconds (spans carry wall time)."""
    return stamps.to_realtime(perf_ns)
