"""Long streams: does a response that takes longer than ``--long-stream`` get through?

Two requests for the same number of tokens run side by side: a stream, which a limit on a
response's whole duration cuts; and the same request with ``stream: false``, where the
server is silent until it is done, which a read (idle) timeout cuts, as it cuts a stream
whose queue wait or prefill takes that long. nginx's ``proxy_read_timeout`` counts only
between two reads, so a steady stream survives it and only the second request shows it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from streamobs.doctor.context import Context
from streamobs.doctor.http import (
    Exchange,
    ExchangeError,
    describe_error,
    error_message,
    read_bounded,
)
from streamobs.doctor.http import request_body as make_body
from streamobs.doctor.probes import Pace
from streamobs.doctor.verdict import CheckResult, Verdict, worst
from streamobs.probe import Outcome, ProbeResult, ProbeSpec, run_probe

NAME = "long-stream"
# Aim past the length, so a server a little faster than measured still lasts long enough.
LENGTH_MARGIN = 1.15
LENGTH_EXTRA_SECONDS = 1.0
GATEWAY_STATUSES = frozenset({502, 503, 504})

FIX_STREAM = (
    "the path limits how long a response may last: raise that limit above your longest "
    "generation (nginx: `proxy_read_timeout 3600s;`; also any load balancer or gateway "
    "in front: AWS ALB idle timeout, Envoy/Istio route timeout, API gateway timeouts)"
)
FIX_SILENT = (
    "the path gives up on a server that is silent that long, as it is during a long queue "
    "wait or prefill and for every stream: false request: nginx: `proxy_read_timeout 3600s;` "
    "in the location serving /v1/; other proxies: raise the upstream read (idle) timeout"
)


@dataclass(frozen=True, slots=True)
class SilentReply:
    """The non-streamed request: when its answer (or the failure) came."""

    status: int | None
    seconds: float
    message: str | None = None
    error: str | None = None


def judge_stream(result: ProbeResult, length: float) -> tuple[Verdict, str]:
    took = result.end_ns / 1e9
    if result.ok:
        assert result.done_ns is not None
        seconds = result.done_ns / 1e9
        if seconds >= length:
            return Verdict.PASS, (
                f"stream: {seconds:.1f} s, {result.content_events} content events, arrived whole"
            )
        return Verdict.INCONCLUSIVE, (
            f"stream: ended normally after only {seconds:.1f} s (the server was faster than "
            f"measured), shorter than {length:g} s"
        )
    if result.outcome is Outcome.TRUNCATED or (
        result.outcome is Outcome.HTTP_STATUS and result.http_status in GATEWAY_STATUSES
    ):
        return Verdict.FAIL, (
            f"stream: cut after {took:.1f} s and {result.content_events} content events "
            f"({result.error})"
        )
    return (
        Verdict.INCONCLUSIVE,
        f"stream: {result.outcome.value} after {took:.1f} s ({result.error})",
    )


def judge_silent(reply: SilentReply, length: float) -> tuple[Verdict, str]:
    took = f"after {reply.seconds:.1f} s"
    if reply.status == 200:
        if reply.seconds >= length:
            return Verdict.PASS, f"stream: false: answered {took} of silence"
        return Verdict.INCONCLUSIVE, (
            f"stream: false: answered {took}, shorter than {length:g} s (a faster server)"
        )
    if reply.status in GATEWAY_STATUSES:
        return Verdict.FAIL, (
            f"stream: false: HTTP {reply.status} {took} of silence: the path gave up waiting"
        )
    if reply.status is None and reply.error == "connection closed without a response":
        return Verdict.FAIL, f"stream: false: connection closed {took} without an answer"
    what = f"HTTP {reply.status}" if reply.status is not None else reply.error
    reason = f": {reply.message}" if reply.message else ""
    return Verdict.INCONCLUSIVE, f"stream: false: {what} {took}{reason}"


def evaluate(
    stream: ProbeResult, silent: SilentReply, length: float, max_tokens: int, pace: Pace
) -> CheckResult:
    (v_stream, line_stream), (v_silent, line_silent) = (
        judge_stream(stream, length),
        judge_silent(silent, length),
    )
    verdict = worst((v_stream, v_silent))
    evidence: dict[str, Any] = {
        "long_stream_seconds": length,
        "max_tokens": max_tokens,
        "pace": {"ttft_seconds": round(pace.ttft, 4), "seconds_per_token": pace.per_token},
        "stream": {
            "outcome": stream.outcome.value,
            "seconds": round((stream.done_ns or stream.end_ns) / 1e9, 3),
            "content_events": stream.content_events,
            "output_tokens": stream.output_tokens,
            "error": stream.error,
        },
        "non_streamed": {
            "status": silent.status,
            "seconds": round(silent.seconds, 3),
            "error": silent.error or silent.message,
        },
    }
    fixes = [
        fix for v, fix in ((v_stream, FIX_STREAM), (v_silent, FIX_SILENT)) if v is Verdict.FAIL
    ]
    summary = {
        Verdict.PASS: f"responses lasting over {length:g} s get through, streamed or not",
        Verdict.FAIL: f"the path cuts responses lasting over {length:g} s",
    }.get(verdict, f"cannot tell whether responses over {length:g} s get through")
    details = (
        line_stream,
        line_silent,
        f"{max_tokens} tokens asked for each, at {pace.per_token * 1000:.1f} ms per token "
        f"(measured on the {pace.source} stream)",
    )
    return CheckResult(NAME, verdict, summary, details, evidence, "; ".join(fixes) or None)


def _non_streamed(spec: ProbeSpec, bound: float) -> SilentReply:
    with Exchange(spec.target.request_url, bound) as exchange:
        try:
            exchange.send(make_body(spec, stream=False), spec.request_headers())
            response = exchange.response()
        except ExchangeError as exc:
            return SilentReply(None, exchange.elapsed(), error=describe_error(exc))
        seconds = exchange.elapsed()
        message = None if response.status == 200 else error_message(read_bounded(exchange))
        return SilentReply(response.status, seconds, message)


def run(ctx: Context) -> CheckResult:
    length = ctx.options.long_stream
    pace = ctx.probes.pace()
    if pace is None:
        return CheckResult(
            NAME,
            Verdict.INCONCLUSIVE,
            "no stream arrived token by token, so how many tokens last "
            f"{length:g} s is unknown (see buffering)",
        )
    max_tokens = pace.tokens_lasting(length * LENGTH_MARGIN + LENGTH_EXTRA_SECONDS)
    if ctx.max_model_len:
        # The context caps the length; a little less margin is fine, shorter than asked is not.
        room = ctx.max_model_len - (pace.prompt_tokens or 0) - 8
        lasts = pace.ttft + room * pace.per_token
        if lasts < length * LENGTH_MARGIN:
            return CheckResult(
                NAME,
                Verdict.INCONCLUSIVE,
                f"at {pace.per_token * 1000:.1f} ms per token the model's context of "
                f"{ctx.max_model_len} tokens lasts about {lasts:.0f} s, less than the "
                f"{length * LENGTH_MARGIN:.0f} s a {length:g} s check needs with its margin; "
                "run with a shorter --long-stream",
                evidence={"max_model_len": ctx.max_model_len, "needed_tokens": max_tokens},
            )
        max_tokens = min(max_tokens, room)
    bound = length * 1.5 + ctx.options.timeout
    spec = ctx.probes.spec(ctx.options.target, max_tokens, total=bound)
    # Side by side, so the check takes about --long-stream once. A daemon thread, so an
    # interrupted run exits at once (and the socket closes with the process).
    streamed: list[ProbeResult] = []
    thread = threading.Thread(
        target=lambda: streamed.append(run_probe(spec)), name="streamobs-doctor", daemon=True
    )
    thread.start()
    silent = _non_streamed(spec, bound)
    thread.join()
    if not streamed:
        return CheckResult(NAME, Verdict.INCONCLUSIVE, "the streamed request could not run")
    return evaluate(streamed[0], silent, length, max_tokens, pace)
