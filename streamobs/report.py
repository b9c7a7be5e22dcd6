"""Human-readable and JSON views of probe results (read-only over ProbeResult)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from streamobs.probe.result import ProbeResult
from streamobs.secret import Secret, redact
from streamobs.stats import quantile
from streamobs.traces.records import ServerSpan, server_timing

# Trace id -> the server's own span of that probe (None: none came in the wait).
ServerSpans = Mapping[str, ServerSpan | None]

ERROR_CHARS = 500  # an error line is cut here, after redaction
_FIELD_CHARS = 200


def redact_result(result: ProbeResult, secrets: Iterable[Secret | str]) -> ProbeResult:
    """``result`` with every field that carries server text redacted (and bounded), so it
    can be logged, shown and exported: the one place a result is made safe to print."""
    values = tuple(secrets)

    def clean(text: str | None, limit: int = _FIELD_CHARS) -> str | None:
        return None if text is None else redact(text, values, max_length=limit)

    return replace(
        result,
        error=clean(result.error, ERROR_CHARS),
        response_id=clean(result.response_id),
        response_model=clean(result.response_model),
        finish_reason=clean(result.finish_reason),
        content_type=clean(result.content_type),
        content_encoding=clean(result.content_encoding),
    )


def ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.1f} ms"


def _size(count: int) -> str:
    return f"{count} B" if count < 1024 else f"{count / 1024:.1f} KiB"


def describe(result: ProbeResult) -> str:
    """A phase-by-phase breakdown of one probe."""
    lines = [f"{result.url}  model={result.model}  outcome={result.outcome.value}"]
    if result.error:
        lines.append(f"  error         {result.error}")
    if result.http_status is not None:
        details = [f"HTTP {result.http_status}", result.http_version or ""]
        if result.content_type:
            details.append(result.content_type)
        if result.content_encoding:
            details.append(f"Content-Encoding: {result.content_encoding}")
        lines.append("  response      " + ", ".join(d for d in details if d))
    for name, value in (
        ("dns", result.dns_ns),
        ("connect", result.connect_ns),
        ("tls", result.tls_ns),
    ):
        if value is not None:
            lines.append(f"  {name:<13} {ms(value)}")
    phases = [
        ("headers", result.headers_ns),
        ("first event", result.first_event_ns),
        ("TTFT", result.first_token_ns),
    ]
    if result.first_answer_ns is not None and result.first_answer_ns != result.first_token_ns:
        phases.append(("first answer", result.first_answer_ns))
    phases += [("last token", result.last_token_ns), ("e2e", result.done_ns)]
    for name, value in phases:
        if value is not None:
            lines.append(f"  {name:<13} {ms(value)}")
    if result.output_tokens is not None:
        source = "from usage" if result.output_tokens_source == "usage" else "content events"
        lines.append(f"  tokens        {result.output_tokens} ({source})")
    if result.tpot_ns is not None:
        lines.append(f"  TPOT          {ms(result.tpot_ns)}")
    gaps = result.itl_ns
    if gaps:
        lines.append(
            f"  ITL           p50 {ms(quantile(gaps, 0.5))}  p99 {ms(quantile(gaps, 0.99))}"
            f"  max {ms(max(gaps))}  ({len(gaps)} gaps)"
        )
    if result.delivery is not None:
        d = result.delivery
        verdict = "YES (tokens arrive in bursts)" if d.buffered else "no"
        lines.append(
            f"  delivery      {d.reads} reads, {d.events_per_read:.2f} events/read, "
            f"largest burst {d.largest_burst}, {d.burst_share:.0%} of tokens in bursts"
        )
        lines.append(f"  buffered      {verdict}")
    lines.append(
        f"  received      {_size(result.bytes_received)}, {result.events} events, "
        f"{result.keepalives} keep-alive comments"
    )
    if result.request_sent_ns is not None:
        lines.append("  timing        " + timing_line(result))
    return "\n".join(lines)


def seconds_text(value: float | None) -> str:
    return "-" if value is None else ms(value * 1e9)


def describe_server(result: ProbeResult, span: ServerSpan | None, waited: float) -> str:
    """Where the probe's time to first token went, from the server's own span of it."""
    if span is None:
        return (
            f"  server        no span within {waited:g} s (is the server sending its spans here, "
            "e.g. vllm serve --otlp-traces-endpoint?)"
        )
    timing = server_timing(result.first_token_ns, span)
    lines = [f"  server        llm_request {span.request_id or '-'} (trace {span.trace_id})"]
    for name, value in (
        ("queue", span.queue_seconds),
        ("prefill", span.prefill_seconds),
        ("TTFT", span.ttft_seconds),
        ("decode", span.decode_seconds),
        ("e2e", span.e2e_seconds),
    ):
        lines.append(f"    {name:<11} {seconds_text(value)}")
    if span.prompt_tokens is not None or span.completion_tokens is not None:
        prompt = "-" if span.prompt_tokens is None else span.prompt_tokens
        output = "-" if span.completion_tokens is None else span.completion_tokens
        lines.append(f"    {'tokens':<11} {prompt} prompt, {output} output (the server's usage)")
    if timing.path_seconds is not None:
        lines.append(
            f"  path          {timing.path_seconds * 1e3:.3f} ms "
            "(client TTFT - server TTFT: network and proxies)"
        )
    return "\n".join(lines)


def server_json(result: ProbeResult, span: ServerSpan | None) -> dict[str, Any] | None:
    if span is None:
        return None
    out = span.to_dict()
    out["path_seconds"] = server_timing(result.first_token_ns, span).path_seconds
    return out


def timing_line(result: ProbeResult) -> str:
    """Whether the probe's own stamps can be trusted, and by how much at most."""
    timing = result.timing
    sent = "kernel" if timing.sent_by_kernel else "clock"
    waited = (
        f", waited {ms(timing.run_queue_wait_ns)} for a CPU"
        if timing.run_queue_wait_ns is not None
        else ""
    )
    if timing.degraded is None:
        verdict = f"exact (stamp error at most {timing.max_error_ns / 1e3:.0f} us"
    else:
        verdict = (
            f"DEGRADED: {timing.degraded.value} (error up to {ms(timing.max_error_ns)}; "
            "kept out of latency figures"
        )
    return f"{verdict}; request sent stamped by the {sent}{waited})"


def one_line(index: int, result: ProbeResult) -> str:
    buffered = "buffered" if result.delivery is not None and result.delivery.buffered else ""
    if result.timing.degraded is not None:
        buffered = (buffered + " degraded").strip()
    return (
        f"#{index:<3} {result.outcome.value:<19} ttft {ms(result.first_token_ns):>10}  "
        f"tpot {ms(result.tpot_ns):>9}  e2e {ms(result.done_ns):>10}  "
        f"tokens {result.output_tokens if result.output_tokens is not None else '-':>4} {buffered}"
    ).rstrip()


def summary(results: Sequence[ProbeResult]) -> dict[str, Any]:
    outcomes = Counter(r.outcome.value for r in results)

    def spread(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": quantile(values, 0.5) / 1e9 if values else None,
            "p99": quantile(values, 0.99) / 1e9 if values else None,
        }

    ok = [r for r in results if r.ok]
    return {
        "probes": len(results),
        "ok": len(ok),
        "outcomes": dict(sorted(outcomes.items())),
        "buffered": sum(1 for r in results if r.delivery is not None and r.delivery.buffered),
        "ttft_seconds": spread([r.first_token_ns for r in ok if r.first_token_ns is not None]),
        "tpot_seconds": spread([r.tpot_ns for r in ok if r.tpot_ns is not None]),
        "e2e_seconds": spread([r.done_ns for r in ok if r.done_ns is not None]),
    }


def describe_summary(results: Sequence[ProbeResult]) -> str:
    s = summary(results)
    outcomes = ", ".join(f"{k} {v}" for k, v in s["outcomes"].items())
    lines = [f"{s['probes']} probes: {outcomes}; {s['buffered']} buffered"]
    for label, key in (("TTFT", "ttft_seconds"), ("TPOT", "tpot_seconds"), ("e2e", "e2e_seconds")):
        p50, p99 = s[key]["p50"], s[key]["p99"]
        if p50 is not None:
            lines.append(f"  {label:<5} p50 {ms(p50 * 1e9)}  p99 {ms(p99 * 1e9)}  (ok probes)")
    return "\n".join(lines)


def to_json(results: Sequence[ProbeResult], server: ServerSpans | None = None) -> str:
    """With ``server`` (a receiver ran), each probe has a ``server`` entry: its own span's
    figures and the path time, or null when no span came."""
    probes = []
    for result in results:
        entry = result.to_dict()
        if server is not None:
            span = server.get(result.trace_id) if result.trace_id else None
            entry["server"] = server_json(result, span)
        probes.append(entry)
    return json.dumps({"probes": probes, "summary": summary(results)}, indent=2)
