"""vLLM's captured OTLP trace bodies decode into the figures the capture shows, and the
simulator's spans are shaped like them."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from streamobs.simulator import spans as sim_spans
from streamobs.traces import records as r
from streamobs.traces.decode import BadTraces, decode_request
from tests.fixtures import FIXTURES

TRACES = FIXTURES / "otlp-traces"
SENT_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def captured_span_json() -> dict[str, object]:
    data = json.loads((TRACES / "llm-request.json").read_text())
    span: dict[str, object] = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span


def test_captured_llm_request_decodes_to_the_capture() -> None:
    body = (TRACES / "llm-request.pb").read_bytes()
    assert len(body) == 947
    decoded = decode_request(body)
    assert decoded.spans == 1
    (span,) = decoded.llm_requests
    raw = captured_span_json()
    attributes = {
        a["key"]: a["value"]  # type: ignore[index]
        for a in raw["attributes"]  # type: ignore[attr-defined]
    }
    # The trace and parent are those of the traceparent the request carried.
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_span_id == "00f067aa0ba902b7"
    assert span.trace_id == base64.b64decode(str(raw["traceId"])).hex()
    assert span.span_id == base64.b64decode(str(raw["spanId"])).hex()
    assert span.start_unix_ns == int(str(raw["startTimeUnixNano"]))
    assert span.end_unix_ns == int(str(raw["endTimeUnixNano"]))
    assert span.request_id == "chatcmpl-streamobs-probe-0001"
    expected = {
        "queue_seconds": r.QUEUE,
        "ttft_seconds": r.TTFT,
        "prefill_seconds": r.PREFILL,
        "decode_seconds": r.DECODE,
        "inference_seconds": r.INFERENCE,
        "e2e_seconds": r.E2E,
    }
    for field, name in expected.items():
        assert getattr(span, field) == attributes[name]["doubleValue"], field
    assert span.prompt_tokens == int(attributes[r.PROMPT_TOKENS]["intValue"]) == 32
    assert span.completion_tokens == int(attributes[r.COMPLETION_TOKENS]["intValue"]) == 16
    assert span.service_name == "unknown_service:python3"
    # The stream that request got: 16 tokens, the same request id.
    stream = (TRACES / "chat-stream-traced.sse").read_text()
    assert '"id":"chatcmpl-streamobs-probe-0001"' in stream
    assert '"completion_tokens":16' in stream


def test_startup_spans_are_counted_but_describe_no_request() -> None:
    decoded = decode_request((TRACES / "startup-spans.pb").read_bytes())
    assert decoded.spans >= 1
    assert decoded.llm_requests == ()


def test_garbage_is_refused() -> None:
    with pytest.raises(BadTraces):
        decode_request(b"\xff\xff\xff\xff not protobuf")


def test_attributes_of_the_wrong_type_are_missing() -> None:
    message = ExportTraceServiceRequest()
    message.ParseFromString((TRACES / "llm-request.pb").read_bytes())
    span = message.resource_spans[0].scope_spans[0].spans[0]
    for attribute in span.attributes:
        if attribute.key == r.TTFT:
            attribute.value.string_value = "fast"
        if attribute.key == r.COMPLETION_TOKENS:
            attribute.value.double_value = 16.0
    (decoded,) = decode_request(message.SerializeToString()).llm_requests
    assert decoded.ttft_seconds is None
    assert decoded.completion_tokens is None
    assert decoded.queue_seconds is not None


def test_simulator_span_has_the_captured_shape() -> None:
    captured = ExportTraceServiceRequest()
    captured.ParseFromString((TRACES / "llm-request.pb").read_bytes())
    request = sim_spans.RequestSpan(
        traceparent=SENT_TRACEPARENT,
        request_id="chatcmpl-streamobs-probe-0001",
        received_unix_ns=1,
        finished_unix_ns=2,
        time_to_first_token=0.08,
        e2e=0.16,
        time_in_queue=0.00006,
        prompt_tokens=32,
        completion_tokens=16,
        time_in_model_prefill=0.03,
        time_in_model_decode=0.08,
        max_tokens=16,
        temperature=1.0,
    )
    span = sim_spans.build_span(request)
    assert span is not None
    ours = sim_spans.export_request([span])
    theirs_rs, ours_rs = captured.resource_spans[0], ours.resource_spans[0]
    # Resource: the same keys in the same order (values such as the pid differ).
    assert [a.key for a in ours_rs.resource.attributes] == [
        a.key for a in theirs_rs.resource.attributes
    ]
    module = {a.key: a.value.string_value for a in ours_rs.resource.attributes}
    assert module["vllm.instrumenting_module_name"] == "vllm.llm_engine"
    assert ours_rs.scope_spans[0].scope.name == theirs_rs.scope_spans[0].scope.name
    theirs_span = theirs_rs.scope_spans[0].spans[0]
    assert span.name == theirs_span.name == r.LLM_REQUEST
    assert span.kind == theirs_span.kind
    assert span.flags == theirs_span.flags
    assert span.trace_id == theirs_span.trace_id
    assert span.parent_span_id == theirs_span.parent_span_id
    assert [(a.key, a.value.WhichOneof("value")) for a in span.attributes] == [
        (a.key, a.value.WhichOneof("value")) for a in theirs_span.attributes
    ]
    # And it decodes like the real one.
    (decoded,) = decode_request(ours.SerializeToString()).llm_requests
    assert decoded.ttft_seconds == 0.08
    assert decoded.prefill_seconds == 0.03
    assert decoded.inference_seconds == pytest.approx(0.11)


def test_simulator_sends_no_span_for_an_unsampled_caller() -> None:
    request = sim_spans.RequestSpan(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "x", 1, 2, 0.1, 0.2, 0.0,
        1, 1, 0.1, 0.1, 1, None,
    )  # fmt: skip
    assert sim_spans.build_span(request) is None
