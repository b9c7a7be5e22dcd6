"""Abandon a request the way a client that gives up does, then watch what the server does:
the raw material of the disconnect check.

The client closes first and only then is the server observed: vLLM's ``/metrics`` can take
about 2 s to answer while it generates, so a scrape while the request is still open would
keep the client there far longer than it meant to stay (and let the server generate the
whole answer meanwhile). A stream is left after a few content events; a non-streamed
request after the time the server's pace says it needs to be generating. Afterwards the
metrics are read until the running count is back down, then once more after a window; and
when a trace receiver runs, the request's own ``llm_request`` span says how many tokens
the server generated for it in all (its usage) and how long it went on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamobs.doctor.context import Context
from streamobs.doctor.engine import EngineCounts, EngineWatch
from streamobs.doctor.http import (
    Exchange,
    ExchangeError,
    describe_error,
    read_content_events,
    request_body,
)
from streamobs.doctor.probes import Pace
from streamobs.probe.protocol import Protocol
from streamobs.probe.tracecontext import new_trace_context, traced_headers
from streamobs.traces.records import ServerSpan

EVENTS_BEFORE_CLOSE = 3  # content events a stream delivers before the client leaves
SETTLE_SECONDS = 2.0  # vLLM stops within about 0.3 s of a disconnect
QUIET_WAIT_SECONDS = 2.0  # for requests of earlier checks to wind down
POLL_SECONDS = 0.1
FALLBACK_HOLD_SECONDS = 1.0  # a non-streamed request without a known pace
SPAN_WAIT_SECONDS = 15.0  # vLLM exports its spans every 5 s


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str  # its name in --json
    stream: bool  # a stream left after a few events, or a non-streamed request left early
    describe: str


@dataclass(frozen=True, slots=True)
class Observation:
    """The server around one abandoned request, all of it seen after the client left."""

    scenario: Scenario
    max_tokens: int
    before: EngineCounts  # before the request was sent
    open_seconds: float  # from sending the request to closing it
    events_before_close: int  # content events the client had received (not tokens)
    closed_at: float  # monotonic
    down: EngineCounts | None  # first scrape after the close with running back down
    window_start: EngineCounts  # the last scrape of that wait
    window_end: EngineCounts
    span: ServerSpan | None = None  # the request's own llm_request span, when one came

    @property
    def window_growth(self) -> float:
        return self.window_end.generated - self.window_start.generated

    @property
    def generated_in_all(self) -> float:
        return self.window_end.generated - self.before.generated

    @property
    def kept_going_seconds(self) -> float | None:
        """How long the server went on after the client left, by the span: its e2e (the
        server's clock) minus the time the client had the request open (the client's),
        so no two clocks are compared."""
        if self.span is None or self.span.e2e_seconds is None:
            return None
        return self.span.e2e_seconds - self.open_seconds

    def evidence(self) -> dict[str, Any]:
        window = self.window_end.at - self.window_start.at
        out: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "content_events_before_close": self.events_before_close,
            "open_seconds": round(self.open_seconds, 3),
            "running_before": self.before.running,
            "running_after_close": self.window_start.running,
            "running_at_end": self.window_end.running,
            "running_down_after_close_seconds": (
                None if self.down is None else round(self.down.at - self.closed_at, 3)
            ),
            "tokens_generated_in_all": self.generated_in_all,
            "window_seconds": round(window, 3),
            "tokens_generated_in_window": self.window_growth,
        }
        if self.span is not None:
            kept = self.kept_going_seconds
            out["span"] = {
                "trace_id": self.span.trace_id,
                "completion_tokens": self.span.completion_tokens,
                "e2e_seconds": self.span.e2e_seconds,
                "kept_going_after_close_seconds": None if kept is None else round(kept, 3),
            }
        return out


class Unobservable(Exception):
    """One line saying why a scenario could not be observed."""


def _wait_until(deadline: float) -> None:
    time.sleep(max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))


def _quiet(watch: EngineWatch) -> EngineCounts:
    """Counts once requests of earlier checks have wound down (or the wait is over)."""
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    counts = watch.read()
    while counts.running > 0 and time.monotonic() < deadline:
        _wait_until(deadline)
        counts = watch.read()
    return counts


def hold_seconds(pace: Pace | None) -> float:
    """How long a non-streamed request stays open: until the server is a few tokens into
    its answer, by the pace measured on an earlier stream."""
    if pace is None:
        return FALLBACK_HOLD_SECONDS
    return pace.ttft + (EVENTS_BEFORE_CLOSE + 2) * pace.per_token


def _hold_open(
    exchange: Exchange, protocol: Protocol, scenario: Scenario, pace: Pace | None
) -> int:
    """Keep the request open as the scenario says, never scraping; the content events
    the client received."""
    deadline = exchange.started + exchange.timeout
    if scenario.stream:
        response = exchange.response()
        if response.status != 200:
            raise Unobservable(f"{scenario.describe}: HTTP {response.status}")
        got = read_content_events(exchange, protocol, EVENTS_BEFORE_CLOSE, deadline)
        if got < EVENTS_BEFORE_CLOSE:
            raise Unobservable(f"{scenario.describe}: the stream ended after {got} events")
        return got
    until = min(exchange.started + hold_seconds(pace), deadline)
    while time.monotonic() < until:
        if exchange.answered():
            raise Unobservable(f"{scenario.describe}: the server answered before it was closed")
        _wait_until(until)
    if exchange.answered():
        raise Unobservable(f"{scenario.describe}: the server answered before it was closed")
    return 0


def observe(
    ctx: Context, watch: EngineWatch, scenario: Scenario, max_tokens: int, window: float
) -> Observation:
    pace = ctx.probes.pace()  # measured before, so no probe runs while ours is open
    before = _quiet(watch)
    spec = ctx.probes.spec(ctx.options.target, max_tokens, accept_encoding="identity")
    headers, trace, _request_id = traced_headers(spec.request_headers(), new_trace_context())
    exchange = Exchange(spec.target.request_url, ctx.budget.bound(ctx.options.timeout))
    try:
        exchange.send(request_body(spec, stream=scenario.stream), headers)
        events = _hold_open(exchange, spec.target.protocol, scenario, pace)
    except ExchangeError as exc:
        raise Unobservable(f"{scenario.describe}: {describe_error(exc)}") from None
    finally:
        exchange.close()  # first: the client has gone before anything is observed
    closed_at = time.monotonic()
    open_seconds = exchange.elapsed()
    down: EngineCounts | None = None
    counts = watch.read()
    while True:
        if counts.running <= before.running:
            down = counts
            break
        if time.monotonic() >= closed_at + SETTLE_SECONDS:
            break
        _wait_until(closed_at + SETTLE_SECONDS)
        counts = watch.read()
    time.sleep(window)
    end = watch.read()
    span = None
    if ctx.traces is not None and trace is not None:
        span = ctx.traces.wait_for(trace.trace_id, min(SPAN_WAIT_SECONDS, ctx.budget.remaining()))
    return Observation(
        scenario, max_tokens, before, open_seconds, events, closed_at, down, counts, end, span
    )
