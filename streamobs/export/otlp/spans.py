"""One CLIENT span per probe, after the fact, from the result's own timestamps.

``started_at`` is the wall clock read right before the probe's start stamp; the connection
phases follow one another from there, and every later phase is an offset from
``request_sent`` (itself an offset from the start): the span shows when things really
happened, not when the result was recorded.

The span takes the trace id and span id the probe sent in its ``traceparent``, so the
server's own span of the request (vLLM's ``llm_request``, whose parent is that span id)
sits under it in the trace backend. The SDK draws ids from its tracer's id generator; a
thin wrapper around it hands out the probe's ids for the one span being started on this
thread, and the SDK's own random ids otherwise.
"""

from __future__ import annotations

import threading

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from streamobs.export.otlp import names as n
from streamobs.export.otlp.health import AttributeValue
from streamobs.export.otlp.probe import operation_name
from streamobs.probe.result import ProbeResult
from streamobs.targets import TargetConfig

# Phase events after the request was sent, in the order a stream goes through them.
PHASES = (
    ("streamobs.probe.headers", "headers_ns"),
    ("streamobs.probe.first_event", "first_event_ns"),
    ("streamobs.probe.first_token", "first_token_ns"),
    ("streamobs.probe.first_answer", "first_answer_ns"),
    ("streamobs.probe.last_token", "last_token_ns"),
    ("streamobs.probe.done", "done_ns"),
)


_chosen = threading.local()  # (trace id, span id) for the span this thread starts next
_install_lock = threading.Lock()


class ProbeIds(IdGenerator):
    """The probe's own ids while ``_chosen`` holds them; ``inner``'s otherwise."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner

    def generate_trace_id(self) -> int:
        ids: tuple[int, int] | None = getattr(_chosen, "ids", None)
        return ids[0] if ids is not None else self.inner.generate_trace_id()

    def generate_span_id(self) -> int:
        ids: tuple[int, int] | None = getattr(_chosen, "ids", None)
        return ids[1] if ids is not None else self.inner.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return True  # the probe's ids come from the operating system's random source


def _probe_ids(tracer: Tracer, result: ProbeResult) -> tuple[int, int] | None:
    """The result's ids for ``tracer``'s next span, once its generator is wrapped."""
    if result.trace_id is None or result.span_id is None or not isinstance(tracer, SdkTracer):
        return None
    if not isinstance(tracer.id_generator, ProbeIds):
        with _install_lock:
            if not isinstance(tracer.id_generator, ProbeIds):
                tracer.id_generator = ProbeIds(tracer.id_generator)
    return int(result.trace_id, 16), int(result.span_id, 16)


def record_span(tracer: Tracer, provider: str, target: TargetConfig, result: ProbeResult) -> None:
    start = round(result.started_at * 1e9)
    operation = operation_name(target)
    attributes: dict[str, AttributeValue | list[str]] = {
        n.OPERATION_NAME: operation,
        n.PROVIDER_NAME: provider,
        n.REQUEST_MODEL: result.model,
        n.SERVER_ADDRESS: target.target.host,
        n.SERVER_PORT: target.target.port,
        n.TARGET: target.name,
        "gen_ai.request.stream": True,
        "gen_ai.request.max_tokens": target.max_tokens,
        "gen_ai.request.temperature": 0.0,
        "url.full": result.url,
    }
    optional: dict[str, AttributeValue | list[str] | None] = {
        n.RESPONSE_MODEL: result.response_model,
        "gen_ai.response.id": result.response_id,
        "gen_ai.response.finish_reasons": [result.finish_reason] if result.finish_reason else None,
        "gen_ai.response.time_to_first_chunk": _seconds(result.first_token_ns),
        "gen_ai.usage.input_tokens": result.prompt_tokens,
        "gen_ai.usage.output_tokens": result.output_tokens,
        "http.response.status_code": result.http_status,
        "streamobs.probe.tpot": _seconds(result.tpot_ns),
        "streamobs.probe.buffered": result.delivery.buffered if result.delivery else None,
        "streamobs.probe.timing.degraded": result.timing.degraded.value
        if result.timing.degraded
        else None,
        "streamobs.probe.timing.max_error": result.timing.max_error_ns / 1e9,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if not result.ok:
        attributes[n.ERROR_TYPE] = result.outcome.value
    if result.request_id is not None:
        attributes["streamobs.probe.request_id"] = result.request_id
    _chosen.ids = _probe_ids(tracer, result)
    try:
        # An empty context: the probe's span is the root of its own trace.
        span = tracer.start_span(
            f"{operation} {result.model}",
            context=Context(),
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes=attributes,
        )
    finally:
        _chosen.ids = None
    at = start
    for event, duration in (
        ("streamobs.probe.dns", result.dns_ns),
        ("streamobs.probe.connect", result.connect_ns),
        ("streamobs.probe.tls", result.tls_ns),
    ):
        if duration is not None:
            at += duration
            span.add_event(event, timestamp=at)
    if result.request_sent_ns is not None:
        sent = start + result.request_sent_ns
        span.add_event("streamobs.probe.request_sent", timestamp=sent)
        for event, field in PHASES:
            offset = getattr(result, field)
            if offset is not None:
                span.add_event(event, timestamp=sent + offset)
    if not result.ok:  # success leaves the status unset, as the conventions ask
        span.set_status(Status(StatusCode.ERROR, result.error or result.outcome.value))
    span.end(end_time=start + _end_offset(result))


def _seconds(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e9


def _end_offset(result: ProbeResult) -> int:
    if result.end_ns:
        return result.end_ns
    sent = result.request_sent_ns or 0
    stamps = [getattr(result, field) for _, field in PHASES]
    return sent + max((s for s in stamps if s is not None), default=0)
