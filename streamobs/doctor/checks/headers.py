"""Headers: what the streaming response's headers say about the path, each explained."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from streamobs.doctor.checks import buffering, compression
from streamobs.doctor.context import Context
from streamobs.doctor.http import (
    Exchange,
    ExchangeError,
    describe_error,
    error_message,
    read_bounded,
)
from streamobs.doctor.verdict import CheckResult, Verdict, worst
from streamobs.probe.spec import DEFAULT_ACCEPT_ENCODING

NAME = "headers"
_CACHEABLE = re.compile(r"\b(public|s-maxage|max-age\s*=\s*0*[1-9])", re.IGNORECASE)
_NOT_STORED = re.compile(r"\b(no-store|no-cache|private)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sample:
    """A streaming response's status line and headers (names lower-case)."""

    status: int | None
    version: str | None
    headers: Mapping[str, str]
    error: str | None = None  # the request failed, or the server's error message


@dataclass(frozen=True, slots=True)
class Finding:
    header: str
    value: str | None
    verdict: Verdict
    meaning: str
    fix: str | None = None


def _content_type(value: str | None) -> Finding:
    media = (value or "").split(";")[0].strip().lower()
    if media == "text/event-stream":
        return Finding("Content-Type", value, Verdict.PASS, "an event stream, as SSE clients need")
    return Finding(
        "Content-Type",
        value,
        Verdict.FAIL,
        "not text/event-stream: SDK clients will not read it as a stream",
        "pass the server's Content-Type through unchanged",
    )


def _cache_control(value: str | None) -> Finding:
    if value is None:
        meaning = "absent: caches do not store a POST response unless a header allows it"
        return Finding("Cache-Control", value, Verdict.PASS, meaning)
    if _CACHEABLE.search(value) and not _NOT_STORED.search(value):
        meaning = "lets a shared cache store the response: a CDN could hold or replay it"
        fix = "send `Cache-Control: no-cache` (nginx: `add_header Cache-Control no-cache;`)"
        return Finding("Cache-Control", value, Verdict.WARN, meaning, fix)
    return Finding("Cache-Control", value, Verdict.PASS, "caches will not store or reuse it")


def _accel_buffering(value: str | None) -> Finding:
    lowered = (value or "").strip().lower()
    if lowered == "no":
        meaning = "an nginx further out (e.g. ingress-nginx) will not buffer this response"
        return Finding("X-Accel-Buffering", value, Verdict.PASS, meaning)
    if lowered == "yes":
        meaning = "asks an nginx further out to buffer the stream"
        fix = "do not send `X-Accel-Buffering: yes` on streams"
        return Finding("X-Accel-Buffering", value, Verdict.WARN, meaning, fix)
    meaning = "absent: an nginx further out buffers unless its own proxy_buffering is off"
    return Finding("X-Accel-Buffering", value, Verdict.PASS, meaning)


def _content_encoding(value: str | None) -> Finding:
    if (value or "identity").strip().lower() == "identity":
        return Finding("Content-Encoding", value, Verdict.PASS, "not compressed")
    meaning = "the event stream is compressed for a client that accepts gzip (see compression)"
    return Finding("Content-Encoding", value, Verdict.WARN, meaning, compression.FIX)


def _framing(headers: Mapping[str, str]) -> Finding:
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if chunked:
        meaning = "chunked: sent piece by piece, as generated"
        return Finding("Transfer-Encoding", headers["transfer-encoding"], Verdict.PASS, meaning)
    if "content-length" in headers:
        meaning = "a Content-Length known up front means a hop held the whole stream first"
        length = headers["content-length"]
        return Finding("Content-Length", length, Verdict.WARN, meaning, buffering.FIX_PATH)
    meaning = "neither chunked nor a length: the stream ends when the connection closes"
    return Finding("Transfer-Encoding", None, Verdict.PASS, meaning)


def _version(value: str | None) -> Finding:
    if value == "HTTP/1.0":
        meaning = "an HTTP/1.0 hop: no chunked framing and no keep-alive"
        fix = "find the hop that speaks HTTP/1.0 (nginx: `proxy_http_version 1.1;`)"
        return Finding("HTTP version", value, Verdict.WARN, meaning, fix)
    return Finding("HTTP version", value, Verdict.PASS, "chunked streaming over keep-alive")


def evaluate(sample: Sample) -> CheckResult:
    if sample.status != 200:
        what = f"HTTP {sample.status}" if sample.status is not None else "no response"
        reason = f": {sample.error}" if sample.error else ""
        return CheckResult(
            NAME,
            Verdict.FAIL,
            f"the streaming request got {what}{reason}",
            evidence={"status": sample.status, "error": sample.error},
            fix="make one streaming request through URL work first: `streamobs probe URL`",
        )
    h = sample.headers
    findings = [
        _content_type(h.get("content-type")),
        _cache_control(h.get("cache-control")),
        _accel_buffering(h.get("x-accel-buffering")),
        _content_encoding(h.get("content-encoding")),
        _framing(h),
        _version(sample.version),
    ]
    verdict = worst(f.verdict for f in findings)
    details = tuple(
        f"{f.verdict.value:<4}  {f.header}: {f.value if f.value is not None else '(absent)'}"
        f" - {f.meaning}"
        for f in findings
    )
    evidence = {
        "status": sample.status,
        "http_version": sample.version,
        "headers": {f.header: f.value for f in findings},
        "verdicts": {f.header: f.verdict.value for f in findings},
    }
    flagged = [f.header for f in findings if f.verdict is not Verdict.PASS]
    summary = (
        "the streaming response's headers are as a streaming path needs"
        if not flagged
        else "worth a look: " + ", ".join(flagged)
    )
    fix = None
    if flagged:
        fix = "; ".join(
            f"{f.header}: {f.meaning}" for f in findings if f.verdict is not Verdict.PASS
        )
    return CheckResult(NAME, verdict, summary, details, evidence, fix)


def sample_headers(ctx: Context) -> Sample:
    """Open a short stream as an SDK client would (accepting gzip), keep only the headers,
    and close."""
    options = ctx.options
    spec = ctx.probes.spec(options.target, 4, accept_encoding=DEFAULT_ACCEPT_ENCODING)
    with Exchange(spec.target.request_url, ctx.budget.bound(options.timeout)) as exchange:
        try:
            exchange.send(spec.request_body(), spec.request_headers())
            response = exchange.response()
        except ExchangeError as exc:
            return Sample(None, None, {}, describe_error(exc))
        headers = {name.lower(): value for name, value in response.headers.items()}
        message = None
        if response.status != 200:
            message = error_message(read_bounded(exchange)) or response.reason
        return Sample(response.status, response.version, headers, message)


def run(ctx: Context) -> CheckResult:
    return evaluate(sample_headers(ctx))
