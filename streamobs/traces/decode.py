"""OTLP ``ExportTraceServiceRequest`` bytes to ``ServerSpan`` records (no I/O).

Only spans named ``llm_request`` describe a request; every other span (vLLM's start-up
spans, a user's own) is counted and otherwise left alone. Decoding never trusts the
sender: an attribute of the wrong type is treated as missing, a bad message raises
``BadTraces``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streamobs.traces import records as r

MAX_REQUEST_ID = 256  # characters kept of a request id: it comes from the wire


class BadTraces(ValueError):
    """Bytes that are not an ExportTraceServiceRequest."""


@dataclass(frozen=True, slots=True)
class Decoded:
    spans: int  # every span in the request
    llm_requests: tuple[r.ServerSpan, ...]


def _number(value: AnyValue) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return float(value.double_value)
    if kind == "int_value":
        return float(value.int_value)
    return None


def _integer(value: AnyValue) -> int | None:
    return int(value.int_value) if value.WhichOneof("value") == "int_value" else None


def _string(value: AnyValue) -> str | None:
    if value.WhichOneof("value") != "string_value":
        return None
    return value.string_value[:MAX_REQUEST_ID]


def _attributes(items: Iterable[KeyValue]) -> dict[str, AnyValue]:
    return {item.key: item.value for item in items}


def _server_span(span: Span, service_name: str | None) -> r.ServerSpan:
    attributes = _attributes(span.attributes)

    def seconds(name: str) -> float | None:
        value = attributes.get(name)
        return None if value is None else _number(value)

    def tokens(name: str) -> int | None:
        value = attributes.get(name)
        return None if value is None else _integer(value)

    request_id = attributes.get(r.REQUEST_ID)
    return r.ServerSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        start_unix_ns=span.start_time_unix_nano,
        end_unix_ns=span.end_time_unix_nano,
        request_id=None if request_id is None else _string(request_id),
        queue_seconds=seconds(r.QUEUE),
        ttft_seconds=seconds(r.TTFT),
        prefill_seconds=seconds(r.PREFILL),
        decode_seconds=seconds(r.DECODE),
        inference_seconds=seconds(r.INFERENCE),
        e2e_seconds=seconds(r.E2E),
        prompt_tokens=tokens(r.PROMPT_TOKENS),
        completion_tokens=tokens(r.COMPLETION_TOKENS),
        service_name=service_name,
    )


def decode_request(body: bytes) -> Decoded:
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise BadTraces(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    total = 0
    found: list[r.ServerSpan] = []
    for resource_spans in message.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name")
        service_name = None if service is None else _string(service)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                total += 1
                if span.name == r.LLM_REQUEST and len(span.trace_id) == 16:
                    found.append(_server_span(span, service_name))
    return Decoded(total, tuple(found))
