"""The immutable record one probe produces. Exporters and reports only read it."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any


class Outcome(str, enum.Enum):
    """The only failure label streamobs uses: a small, fixed set (see DESIGN.md)."""

    OK = "ok"
    CONNECT = "connect"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    NOT_SSE = "not_sse"
    TIMEOUT_HEADERS = "timeout_headers"
    TIMEOUT_FIRST_TOKEN = "timeout_first_token"
    TIMEOUT_TOTAL = "timeout_total"
    STREAM_ERROR = "stream_error"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    EMPTY = "empty"
    TOO_LARGE = "too_large"


class Degraded(str, enum.Enum):
    """Why a probe's stamps cannot vouch for its latencies (a small, fixed set)."""

    LATE_READS = "late_reads"  # this process was too late to read: bytes piled up unseen
    NO_KERNEL_STAMPS = "no_kernel_stamps"  # clock reads after the call, not kernel stamps


@dataclass(frozen=True, slots=True)
class TimingQuality:
    """The largest error the probe's own stamps may carry; exact unless ``degraded``."""

    degraded: Degraded | None = None
    max_error_ns: int = 0
    ttft_error_ns: int | None = None
    itl_error_ns: int | None = None
    e2e_error_ns: int | None = None
    max_lateness_ns: int = 0  # longest a read's bytes waited in the kernel for us
    run_queue_wait_ns: int | None = None  # the probe thread's wait for a CPU
    sent_by_kernel: bool = False  # request_sent is the kernel's transmit stamp

    @property
    def exact(self) -> bool:
        return self.degraded is None


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the bytes reached us: a healthy path delivers about one event per read."""

    reads: int
    reads_with_events: int
    events_per_read: float
    largest_burst: int  # most content events delivered together (one read or back to back)
    burst_share: float  # share of content events that arrived inside a burst of two or more
    buffered: bool


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Nanoseconds, or None when the probe never got there. ``dns_ns``, ``connect_ns``
    (TCP) and ``tls_ns`` are durations of their phase; ``request_sent_ns`` and ``end_ns``
    count from ``start_ns`` (a ``perf_counter_ns`` value); everything after the request
    counts from ``request_sent``: ``first_token_ns`` is the TTFT, ``done_ns`` the e2e."""

    url: str
    endpoint: str  # "chat", "completions", "responses" or "messages"
    model: str
    outcome: Outcome
    start_ns: int
    started_at: float  # wall clock, for humans only
    dns_ns: int | None = None
    connect_ns: int | None = None
    tls_ns: int | None = None
    request_sent_ns: int | None = None
    headers_ns: int | None = None
    first_event_ns: int | None = None
    first_token_ns: int | None = None
    first_answer_ns: int | None = None  # first non-reasoning content (reasoning models)
    first_tool_call_ns: int | None = None  # first tool-call name or arguments delta
    last_token_ns: int | None = None
    done_ns: int | None = None
    end_ns: int = 0  # when the probe stopped, whatever the outcome
    token_arrivals_ns: tuple[int, ...] = ()
    output_tokens: int | None = None
    output_tokens_source: str | None = None  # "usage" or "events"
    prompt_tokens: int | None = None
    content_events: int = 0  # events carrying output of any kind
    reasoning_events: int = 0  # of which reasoning (chat reasoning/reasoning_content,
    # Responses reasoning_text, Messages thinking_delta)
    tool_call_events: int = 0  # of which tool-call arguments
    reasoning_tokens: int | None = None  # from the usage, where the protocol says
    events: int = 0
    keepalives: int = 0
    bytes_received: int = 0
    delivery: Delivery | None = None
    timing: TimingQuality = field(default_factory=TimingQuality)
    http_status: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    http_version: str | None = None
    tls_version: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None  # Messages: stop_reason; Responses: why it ended
    error: str | None = None  # one human line; never contains secrets
    # The W3C trace context the request carried (hex; None when a configured traceparent
    # was sent instead) and its X-Request-Id: the keys to the server's own span of it.
    trace_id: str | None = None
    span_id: str | None = None  # the probe's own span, the parent of the server's
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def itl_ns(self) -> tuple[int, ...]:
        arrivals = self.token_arrivals_ns
        return tuple(b - a for a, b in pairwise(arrivals))

    @property
    def exact(self) -> bool:
        """Stamps good enough for the latency histograms and the SLO."""
        return self.timing.exact

    @property
    def tpot_ns(self) -> float | None:
        """(last_token - first_token) / (output_tokens - 1), per DESIGN.md."""
        if self.first_token_ns is None or self.last_token_ns is None:
            return None
        if self.output_tokens is None or self.output_tokens < 2:
            return None
        return (self.last_token_ns - self.first_token_ns) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view in seconds, with the derived figures included."""
        raw = asdict(self)
        out: dict[str, Any] = {
            "url": self.url,
            "endpoint": self.endpoint,
            "model": self.model,
            "outcome": self.outcome.value,
            "ok": self.ok,
            "started_at": self.started_at,
            "error": self.error,
        }
        seconds = {
            "dns": self.dns_ns,
            "connect": self.connect_ns,
            "tls": self.tls_ns,
            "request_sent": self.request_sent_ns,
            "headers": self.headers_ns,
            "first_event": self.first_event_ns,
            "ttft": self.first_token_ns,
            "first_answer": self.first_answer_ns,
            "first_tool_call": self.first_tool_call_ns,
            "last_token": self.last_token_ns,
            "e2e": self.done_ns,
            "tpot": self.tpot_ns,
            "duration": self.end_ns,
        }
        out["seconds"] = {k: None if v is None else v / 1e9 for k, v in seconds.items()}
        out["itl_seconds"] = [gap / 1e9 for gap in self.itl_ns]
        for key in (
            "output_tokens",
            "output_tokens_source",
            "prompt_tokens",
            "content_events",
            "reasoning_events",
            "tool_call_events",
            "reasoning_tokens",
            "events",
            "keepalives",
            "bytes_received",
            "http_status",
            "content_type",
            "content_encoding",
            "http_version",
            "tls_version",
            "response_id",
            "response_model",
            "finish_reason",
            "trace_id",
            "span_id",
            "request_id",
        ):
            out[key] = raw[key]
        out["delivery"] = raw["delivery"]
        timing = self.timing
        out["timing"] = {
            "exact": timing.exact,
            "degraded": timing.degraded.value if timing.degraded else None,
            "max_error_seconds": timing.max_error_ns / 1e9,
            "max_lateness_seconds": timing.max_lateness_ns / 1e9,
            "run_queue_wait_seconds": None
            if timing.run_queue_wait_ns is None
            else timing.run_queue_wait_ns / 1e9,
            "request_sent_stamp": "kernel" if timing.sent_by_kernel else "clock",
        }
        return out
