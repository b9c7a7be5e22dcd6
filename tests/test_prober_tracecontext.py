"""Every probe carries its own W3C trace context and X-Request-Id, on every protocol."""

from __future__ import annotations

import pytest

from streamobs.probe.prober import run_probe
from streamobs.probe.spec import ENDPOINTS, ProbeSpec, parse_target
from streamobs.probe.tracecontext import new_trace_context, parse_traceparent, traced_headers
from streamobs.simulator import Simulator, SimulatorConfig

PREFIX = {"completions": "cmpl-", "responses": "resp_"}


@pytest.fixture(scope="module")
def sim() -> Simulator:
    with Simulator(SimulatorConfig(model="sim", ttft=0.005, itl=0.001)) as simulator:
        yield simulator  # type: ignore[misc]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_each_probe_sends_a_new_sampled_trace_and_a_request_id(
    sim: Simulator, endpoint: str
) -> None:
    spec = ProbeSpec(parse_target(sim.url, endpoint), "sim", max_tokens=3)
    first, second = run_probe(spec), run_probe(spec)
    assert first.ok and second.ok
    for result in (first, second):
        assert result.trace_id is not None and result.span_id is not None
        assert result.request_id is not None and result.request_id.startswith("streamobs-")
        record = sim.request_log(PREFIX.get(endpoint, "chatcmpl-") + result.request_id)
        assert record is not None, "the server saw the probe's X-Request-Id"
        assert record.traceparent is not None
        assert parse_traceparent(record.traceparent) == (result.trace_id, result.span_id, True)
        assert result.to_dict()["trace_id"] == result.trace_id
    assert first.trace_id != second.trace_id and first.request_id != second.request_id


def test_configured_trace_headers_are_sent_as_they_are() -> None:
    ours = new_trace_context()
    theirs = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    headers, context, request_id = traced_headers(
        {"TraceParent": theirs, "x-request-id": "mine"}, ours
    )
    assert headers == {"TraceParent": theirs, "x-request-id": "mine"}
    assert context is None  # not ours to join
    assert request_id == "mine"
    headers, context, request_id = traced_headers({}, ours)
    assert headers == {"traceparent": ours.traceparent, "X-Request-Id": ours.request_id}
    assert context == ours and request_id == ours.request_id


def test_traceparent_parsing_refuses_invalid_ids() -> None:
    assert parse_traceparent("00-" + "0" * 32 + "-" + "2" * 16 + "-01") is None
    assert parse_traceparent("00-" + "1" * 32 + "-" + "0" * 16 + "-01") is None
    assert parse_traceparent("01-" + "1" * 32 + "-" + "2" * 16 + "-01") is None
    assert parse_traceparent("00-" + "1" * 32 + "-" + "2" * 16 + "-00") == (
        "1" * 32,
        "2" * 16,
        False,
    )
    context = new_trace_context()
    assert len(context.trace_id) == 32 and len(context.span_id) == 16
    assert parse_traceparent(context.traceparent) == (context.trace_id, context.span_id, True)
