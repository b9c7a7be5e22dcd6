"""The W3C trace context every probe carries, so the server's own span of the request can
be found again: a new sampled trace per probe, random ids, and an ``X-Request-Id``.

vLLM starts its ``llm_request`` span in the trace of the incoming ``traceparent`` with the
caller's span id as its parent, and names the request ``chatcmpl-`` + ``X-Request-Id``; the
probe's own span (OTLP export) takes the same trace and span id, so it is the parent of the
server's span in a trace backend.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

TRACEPARENT = "traceparent"
REQUEST_ID = "X-Request-Id"
REQUEST_ID_PREFIX = "streamobs-"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """``trace_id`` (32 hex digits) and ``span_id`` (16: the probe's own span, the parent
    of the server's) as lower-case hex, and the request id sent beside them."""

    trace_id: str
    span_id: str
    request_id: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"  # version 00, sampled

    def headers(self) -> dict[str, str]:
        return {TRACEPARENT: self.traceparent, REQUEST_ID: self.request_id}


def _nonzero_hex(size: int) -> str:
    # An all-zero id is invalid in W3C trace context; with 64+ random bits it never comes.
    while True:
        value = secrets.token_hex(size)
        if value.strip("0"):
            return value


def new_trace_context() -> TraceContext:
    return TraceContext(_nonzero_hex(16), _nonzero_hex(8), REQUEST_ID_PREFIX + _nonzero_hex(8))


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) of a version-00 ``traceparent``, else None."""
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def traced_headers(
    headers: Mapping[str, str], context: TraceContext
) -> tuple[dict[str, str], TraceContext | None, str | None]:
    """``headers`` with the probe's trace context added: (headers, the context the request
    carries, its request id). A ``traceparent`` or ``X-Request-Id`` the user configured is
    sent as it is: a configured trace context is not ours to join (None), a configured
    request id is reported as the request's."""
    present = {name.lower(): value for name, value in headers.items()}
    out = dict(headers)
    request_id = present.get(REQUEST_ID.lower())
    if request_id is None:
        request_id = context.request_id
        out[REQUEST_ID] = request_id
    if TRACEPARENT in present:
        return out, None, request_id
    out[TRACEPARENT] = context.traceparent
    return out, context, request_id
