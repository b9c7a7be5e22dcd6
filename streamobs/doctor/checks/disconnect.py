"""Disconnect propagation: when a client goes away, does the server stop generating?

Judged from the server's own ``/metrics`` (``num_requests_running`` back down, and
``generation_tokens_total`` no longer growing), in two situations: a client leaving a
stream after a few tokens, and one leaving while the server is still silent (a queue wait,
a long prefill, or ``stream: false``). A proxy that only notices a client is gone when a
write to it fails (nginx with ``proxy_ignore_client_abort on``) passes the first and fails
the second. vLLM 0.32 does not count an aborted request in
``request_success_total{finished_reason="abort"}``, so that series cannot be used.
"""

from __future__ import annotations

from streamobs.doctor.abandon import (
    SETTLE_SECONDS,
    TOKENS_BEFORE_CLOSE,
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
    "; judged from num_requests_running and generation_tokens_total instead"
)


MID_STREAM = Scenario(
    "mid_stream", True, f"client closed a stream after {TOKENS_BEFORE_CLOSE} tokens"
)
WHILE_SILENT = Scenario(
    "while_silent", False, "client closed a non-streamed request while the server was generating"
)
FIXES = {MID_STREAM.key: FIX_STREAM, WHILE_SILENT.key: FIX_SILENT}


def judge(obs: Observation) -> tuple[Verdict, str]:
    """Verdict and one line of evidence for one abandoned request."""
    what = obs.scenario.describe
    before, during = obs.before, obs.during
    if during.running <= before.running and during.generated <= before.generated:
        return Verdict.INCONCLUSIVE, (
            f"{what}: the metrics never showed it running; is --metrics the server behind URL?"
        )
    window = obs.window_end.at - obs.window_start.at
    growth = obs.window_growth
    # Others running before, beside ours, or arriving later: their tokens mix with ours.
    busy = (
        before.running > 0
        or during.running > before.running + 1
        or max(obs.window_start.running, obs.window_end.running) > during.running
    )
    if not busy and obs.generated_in_all >= obs.max_tokens:
        return Verdict.FAIL, (
            f"{what}: the server generated all {obs.max_tokens} tokens for nobody "
            f"({obs.generated_in_all:g} generated)"
        )
    if obs.down is not None and growth <= STOPPED_SLACK_TOKENS:
        after = obs.down.at - obs.closed_at
        return Verdict.PASS, (
            f"{what}: the server stopped within {after:.2f} s (running {during.running:g} -> "
            f"{obs.down.running:g}, {growth:g} tokens in the next {window:.1f} s)"
        )
    if busy:
        return Verdict.INCONCLUSIVE, (
            f"{what}: other requests are running ({before.running:g} before, "
            f"{during.running:g} with ours, {obs.window_end.running:g} at the end), so ours "
            "cannot be told apart; run again when the server is idle"
        )
    if obs.down is None and growth > STOPPED_SLACK_TOKENS:
        since = obs.window_end.at - obs.closed_at
        return Verdict.FAIL, (
            f"{what}: {since:.1f} s later still {obs.window_end.running:g} running and "
            f"{growth / window:.0f} tokens/s being generated for nobody"
        )
    return Verdict.INCONCLUSIVE, (
        f"{what}: running {during.running:g} -> {obs.window_end.running:g}, "
        f"{growth:g} tokens in {window:.1f} s after; not clear enough to judge"
    )


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
        # Long enough to be still generating when the observation ends, had nobody stopped it.
        max_tokens = min(pace.tokens_lasting(SETTLE_SECONDS + window + 4.0), MAX_TOKENS)
        if ctx.max_model_len:
            room = ctx.max_model_len - (pace.prompt_tokens or 0) - 8
            max_tokens = max(1, min(max_tokens, room))
    else:
        max_tokens = FALLBACK_TOKENS
    observations: list[Observation] = []
    problems: list[str] = []
    try:
        with EngineWatch(ctx.options.scrape_url, ctx.model, min(5.0, ctx.options.timeout)) as watch:
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
