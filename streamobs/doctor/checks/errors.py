"""Error path: a request that cannot be served must get a clear HTTP error up front, not
HTTP 200 and a stream that fails (or never says why) once it has started."""

from __future__ import annotations

from dataclasses import dataclass, replace

from streamobs.doctor.context import Context
from streamobs.doctor.http import (
    Exchange,
    ExchangeError,
    describe_error,
    error_message,
    read_bounded,
)
from streamobs.doctor.verdict import CheckResult, Verdict, worst
from streamobs.probe import ProbeSpec

NAME = "errors"
BAD_MODEL = "streamobs-doctor-no-such-model"
# Used when /v1/models does not tell the context length: beyond any model's.
HUGE_MAX_TOKENS = 100_000_000

FIX_200 = (
    "have the server (or gateway) validate a request before it starts the stream: vLLM "
    "itself answers 404 for an unknown model and 400 for max_tokens over the context length"
)
FIX_BODY = (
    "nginx: `proxy_intercept_errors off;` and no error_page for 4xx in the location serving "
    "/v1/, so the server's JSON error reaches the client"
)
FIX_NO_ANSWER = "an invalid request must be answered at once with an HTTP error"


@dataclass(frozen=True, slots=True)
class Reply:
    key: str  # stable name in --json: "bad_model" or "over_long"
    case: str  # what was wrong with the request, for humans
    status: int | None
    content_type: str | None = None
    message: str | None = None  # the OpenAI-style error message in the body
    seconds: float | None = None
    error: str | None = None  # the request itself failed


def judge(reply: Reply) -> tuple[Verdict, str, str | None]:
    """Verdict, one line of evidence, and the fix for one error reply."""
    took = f" after {reply.seconds:.2f} s" if reply.seconds is not None else ""
    if reply.status is None:
        return Verdict.FAIL, f"{reply.case}: no answer ({reply.error}){took}", FIX_NO_ANSWER
    head = f"{reply.case}: HTTP {reply.status}{took}"
    if reply.status == 200:
        kind = reply.content_type or "no Content-Type"
        return Verdict.FAIL, f"{head} ({kind}) for a request that cannot be served", FIX_200
    if 400 <= reply.status < 500 and reply.message:
        return Verdict.PASS, f"{head}, JSON error: {reply.message[:160]}", None
    if 400 <= reply.status < 500:
        kind = reply.content_type or "no Content-Type"
        return Verdict.WARN, f"{head} without a JSON error body ({kind})", FIX_BODY
    described = f": {reply.message[:160]}" if reply.message else ""
    return Verdict.WARN, f"{head} for a client mistake{described}", FIX_200


def evaluate(replies: list[Reply]) -> CheckResult:
    judged = [judge(reply) for reply in replies]
    verdict = worst(v for v, _, _ in judged)
    fixes = list(dict.fromkeys(fix for _, _, fix in judged if fix))
    evidence = {
        reply.key: {
            "request": reply.case,
            "status": reply.status,
            "content_type": reply.content_type,
            "message": reply.message,
            "seconds": None if reply.seconds is None else round(reply.seconds, 4),
            "error": reply.error,
        }
        for reply in replies
    }
    summary = {
        Verdict.PASS: "invalid requests get a clear HTTP error with the reason",
        Verdict.WARN: "invalid requests get an HTTP error, but not a clear one",
        Verdict.FAIL: "an invalid request did not get a clear HTTP error",
    }.get(verdict, "")
    details = tuple(line for _, line, _ in judged)
    return CheckResult(NAME, verdict, summary, details, evidence, "; ".join(fixes) or None)


def send_invalid(ctx: Context, key: str, case: str, spec: ProbeSpec) -> Reply:
    timeout = ctx.budget.bound(ctx.options.timeout)
    with Exchange(spec.target.request_url, timeout) as exchange:
        try:
            exchange.send(spec.request_body(), spec.request_headers())
            response = exchange.response()
        except ExchangeError as exc:
            return Reply(key, case, None, seconds=exchange.elapsed(), error=describe_error(exc))
        seconds = exchange.elapsed()
        content_type = response.headers.get("Content-Type")
        if response.status == 200:
            # Leaving at once (the with block closes) stops whatever it started.
            return Reply(key, case, 200, content_type, seconds=seconds)
        return Reply(
            key, case, response.status, content_type, error_message(read_bounded(exchange)), seconds
        )


def run(ctx: Context) -> CheckResult:
    base = ctx.probes.spec(ctx.options.target, 4)
    too_many = ctx.max_model_len + 1 if ctx.max_model_len else HUGE_MAX_TOKENS
    limit = "max_output_tokens" if base.target.endpoint == "responses" else "max_tokens"
    replies = [
        send_invalid(
            ctx, "bad_model", f"unknown model {BAD_MODEL!r}", replace(base, model=BAD_MODEL)
        ),
        send_invalid(
            ctx,
            "over_long",
            f"{limit}={too_many}, over the context length",
            replace(base, max_tokens=too_many),
        ),
    ]
    return evaluate(replies)
