"""Disconnect propagation: when a client goes away, does the server stop generating?

Two situations: a client leaving a stream after a few content events, and one leaving
while the server is still silent (a queue wait, a long prefill, or ``stream: false``). A
proxy that only notices a client is gone when a write to it fails (nginx with
``proxy_ignore_client_abort on``) passes the first and fails the second.

The client closes first; only then is the server observed (see ``abandon``). The best
evidence is the request's own ``llm_request`` span (``--traces-receiver``): the tokens the
server generated for it in all (its usage) and how long it went on after the client left.
Without a span, the server's ``/metrics``: ``num_requests_running`` back down and
``generation_tokens_total`` no longer growing. vLLM 0.32 does not count an aborted request
in ``request_success_total{finished_reason="abort"}``, so that series cannot be used.
Evidence that cannot tell ours apart from other traffic, or says too little, is
inconclusive, never a failure.
"""

from __future__ import annotations

from streamobs.doctor.abandon import (
    EVENTS_BEFORE_CLOSE,
    SETTLE_SECONDS,
    Observation,
    Scenario,
    Unobservable,
    observe,
)
from streamobs.doctor.context import Context
from streamobs.doctor.engine import EngineUnavailable, EngineWatch
from streamobs.doctor.verdict import CheckResult, Verdict, worst

NAME = "disconnect"
WINDOW_SECONDS = (1.0, 3.0)  # growth is measured over this long (min, max)
FALLBACK_TOKENS = 512  # when no stream gave the generation pace
MAX_TOKENS = 8192  # a very fast server needs no more to outlast the observation
STOPPED_SLACK_TOKENS = 1  # a token in flight when the abort landed
# The span's way: the server went on at most this long after the client left (vLLM
# stops within about 0.3 s), and the request asked for enough to outlast far more.
STOPPED_SECONDS = SETTLE_SECONDS
# vLLM's /metrics can take about 2 s to answer while it generates: never less than this.
SCRAPE_TIMEOUT = (5.0, 10.0)

FIX_STREAM = (
    "the path keeps reading the stream after the client has gone: make it close the "
    "upstream connection when the client does (nginx: `proxy_ignore_client_abort off;`, "
    "the default, and no proxy_store or proxy_cache for /v1/)"
)
FIX_SILENT = (
    "the path does not notice a client leaving while the server is still silent: nginx: "
    "`proxy_ignore_client_abort off;` (the default) in the location serving /v1/"
)
FIX_METRICS = "pass --metrics with the URL of the server's own /metrics (vLLM serves it)"
VLLM_ABORT_NOTE = (
    'vLLM 0.32 does not count aborted requests in request_success_total{finished_reason="abort"}'
    "; judged from the request's own span or num_requests_running and generation_tokens_total"
)


MID_STREAM = Scenario(
    "mid_stream", True, f"client closed a stream after {EVENTS_BEFORE_CLOSE} content events"
)
WHILE_SILENT = Scenario(
    "while_silent", False, "client closed a non-streamed request while the server was generating"
)
FIXES = {MID_STREAM.key: FIX_STREAM, WHILE_SILENT.key: FIX_SILENT}


def judge_span(obs: Observation) -> tuple[Verdict, str] | None:
    """The verdict from the request's own span; None when there is none to go by."""
    span, what = obs.span, obs.scenario.describe
    kept = obs.kept_going_seconds
    if span is None or span.completion_tokens is None or kept is None:
        return None
    tokens = span.completion_tokens
    after = max(0, tokens - obs.events_before_close)
    received = (
        f", {obs.events_before_close} content events had reached it" if obs.scenario.stream else ""
    )
    if tokens >= obs.max_tokens:
        return Verdict.FAIL, (
            f"{what}: its own span says the server generated all {tokens} tokens for nobody, "
            f"going on {kept:.1f} s after the client left"
        )
    if kept <= STOPPED_SECONDS:
        return Verdict.PASS, (
            f"{what}: its own span says the server stopped {max(kept, 0.0):.2f} s after the "
            f"client left, at {tokens} of {obs.max_tokens} tokens (usage){received}: "
            f"at most {after} tokens after it left"
        )
    return Verdict.INCONCLUSIVE, (
        f"{what}: its own span says the server went on {kept:.1f} s after the client left "
        f"and stopped at {tokens} of {obs.max_tokens} tokens; slower than a disconnect "
        "should take, not clear enough to judge"
    )


def judge_metrics(obs: Observation) -> tuple[Verdict, str]:
    """The verdict from the server's /metrics after the client left."""
    what = obs.scenario.describe
    before = obs.before
    least = max(1, obs.events_before_close)  # every content event carried a token
    if obs.generated_in_all < least:
        return Verdict.INCONCLUSIVE, (
            f"{what}: the metrics never showed its tokens ({obs.generated_in_all:g} generated); "
            "is --metrics the server behind URL?"
        )
    window = obs.window_end.at - obs.window_start.at
    growth = obs.window_growth
    # Others running before ours, or more than ours at any scrape: their tokens mix in.
    busy = before.running > 0 or max(obs.window_start.running, obs.window_end.running) > 1
    if not busy and obs.generated_in_all >= obs.max_tokens:
        return Verdict.FAIL, (
            f"{what}: the server generated all {obs.max_tokens} tokens for nobody "
            f"({obs.generated_in_all:g} generated)"
        )
    if obs.down is not None and growth <= STOPPED_SLACK_TOKENS:
        after = obs.down.at - obs.closed_at
        return Verdict.PASS, (
            f"{what}: the server had stopped by the first scrape after the close, {after:.2f} s "
            f"later (running {obs.down.running:g}; {obs.generated_in_all:g} tokens in all, "
            f"{growth:g} in the next {window:.1f} s)"
        )
    if busy:
        return Verdict.INCONCLUSIVE, (
            f"{what}: other requests are running ({before.running:g} before, "
            f"{obs.window_end.running:g} at the end), so ours cannot be told apart; run again "
            "when the server is idle, or with --traces-receiver"
        )
    if obs.down is None and growth > STOPPED_SLACK_TOKENS:
        since = obs.window_end.at - obs.closed_at
        return Verdict.FAIL, (
            f"{what}: {since:.1f} s later still {obs.window_end.running:g} running and "
            f"{growth / window:.0f} tokens/s being generated for nobody"
        )
    return Verdict.INCONCLUSIVE, (
        f"{what}: running {obs.window_start.running:g} -> {obs.window_end.running:g}, "
        f"{growth:g} tokens in {window:.1f} s after; not clear enough to judge"
    )


def judge(obs: Observation) -> tuple[Verdict, str]:
    """Verdict and one line of evidence for one abandoned request: its own span first."""
    return judge_span(obs) or judge_metrics(obs)


def evaluate(observations: list[Observation], problems: list[str]) -> CheckResult:
    """``problems``: scenarios that could not be observed, one line each."""
    judged = [(obs, *judge(obs)) for obs in observations]
    verdicts = [v for _, v, _ in judged] + [Verdict.INCONCLUSIVE for _ in problems]
    verdict = worst(verdicts)
    details = tuple(line for _, _, line in judged) + tuple(problems) + (VLLM_ABORT_NOTE,)
    evidence = {obs.scenario.key: obs.evidence() for obs in observations}
    fixes = [FIXES[obs.scenario.key] for obs, v, _ in judged if v is Verdict.FAIL]
    summary = {
        Verdict.PASS: "a client that leaves stops the generation",
        Verdict.FAIL: "a client that leaves does not stop the generation",
    }.get(verdict, "cannot tell whether a client leaving stops the generation")
    return CheckResult(NAME, verdict, summary, details, evidence, "; ".join(fixes) or None)


def run(ctx: Context) -> CheckResult:
    pace = ctx.probes.pace()
    window = WINDOW_SECONDS[0]
    if pace is not None:
        window = min(max(window, 10 * pace.per_token), WINDOW_SECONDS[1])
        # Long enough to be still generating when the observation ends, had nobody stopped
        # it: the wait for running to drop and its slow scrapes, the window, and margin.
        lasting = SETTLE_SECONDS + window + 3 * SCRAPE_TIMEOUT[0]
        max_tokens = min(pace.tokens_lasting(lasting), MAX_TOKENS)
        if ctx.max_model_len:
            room = ctx.max_model_len - (pace.prompt_tokens or 0) - 8
            max_tokens = max(1, min(max_tokens, room))
    else:
        max_tokens = FALLBACK_TOKENS
    observations: list[Observation] = []
    problems: list[str] = []
    scrape_timeout = min(max(SCRAPE_TIMEOUT[0], ctx.options.timeout), SCRAPE_TIMEOUT[1])
    try:
        with EngineWatch(ctx.options.scrape_url, ctx.model, scrape_timeout) as watch:
            for scenario in (MID_STREAM, WHILE_SILENT):
                if ctx.budget.exhausted:
                    problems.append(f"{scenario.describe}: not run, the time bound was reached")
                    continue
                try:
                    observations.append(observe(ctx, watch, scenario, max_tokens, window))
                except Unobservable as exc:
                    problems.append(str(exc))
    except EngineUnavailable as exc:
        return CheckResult(
            NAME,
            Verdict.INCONCLUSIVE,
            f"the server's metrics are needed to see whether it stops: {exc}",
            (VLLM_ABORT_NOTE,),
            {"metrics_url": ctx.options.scrape_url},
            FIX_METRICS,
        )
    return evaluate(observations, problems)
