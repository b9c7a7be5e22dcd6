"""Abandon a request the way a client that gives up does, and record what the server's
metrics say before, while and after: the raw material of the disconnect check."""

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
from streamobs.probe.protocol import Protocol

TOKENS_BEFORE_CLOSE = 3
SETTLE_SECONDS = 2.0  # vLLM stops within about 0.3 s of a disconnect
QUIET_WAIT_SECONDS = 2.0  # for requests of earlier checks to wind down
POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str  # its name in --json
    stream: bool  # a stream left after a few tokens, or a non-streamed request left early
    describe: str


@dataclass(frozen=True, slots=True)
class Observation:
    """The server's counts around one abandoned request."""

    scenario: Scenario
    max_tokens: int
    before: EngineCounts  # before the request was sent
    during: EngineCounts  # just before the client closed
    closed_at: float  # monotonic
    down: EngineCounts | None  # first scrape with running back to its level before
    window_start: EngineCounts
    window_end: EngineCounts

    @property
    def window_growth(self) -> float:
        return self.window_end.generated - self.window_start.generated

    @property
    def generated_in_all(self) -> float:
        return self.window_end.generated - self.before.generated

    def evidence(self) -> dict[str, Any]:
        window = self.window_end.at - self.window_start.at
        return {
            "max_tokens": self.max_tokens,
            "running_before": self.before.running,
            "running_while_open": self.during.running,
            "running_at_end": self.window_end.running,
            "running_down_after_close_seconds": (
                None if self.down is None else round(self.down.at - self.closed_at, 3)
            ),
            "tokens_generated_in_all": self.generated_in_all,
            "window_seconds": round(window, 3),
            "tokens_generated_in_window": self.window_growth,
        }


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


def _hold_open(
    exchange: Exchange,
    protocol: Protocol,
    scenario: Scenario,
    watch: EngineWatch,
    before: EngineCounts,
) -> EngineCounts:
    """Keep the request open until the server is generating for it; the counts then."""
    deadline = exchange.started + exchange.timeout
    if scenario.stream:
        response = exchange.response()
        if response.status != 200:
            raise Unobservable(f"{scenario.describe}: HTTP {response.status}")
        got = read_content_events(exchange, protocol, TOKENS_BEFORE_CLOSE, deadline)
        if got < TOKENS_BEFORE_CLOSE:
            raise Unobservable(f"{scenario.describe}: the stream ended after {got} tokens")
        return watch.read()
    while time.monotonic() < deadline:
        if exchange.answered():
            raise Unobservable(f"{scenario.describe}: the server answered before it was closed")
        counts = watch.read()
        if counts.generated >= before.generated + TOKENS_BEFORE_CLOSE:
            return counts
        _wait_until(deadline)
    raise Unobservable(f"{scenario.describe}: the server did not start generating in time")


def observe(
    ctx: Context, watch: EngineWatch, scenario: Scenario, max_tokens: int, window: float
) -> Observation:
    before = _quiet(watch)
    spec = ctx.probes.spec(ctx.options.target, max_tokens, accept_encoding="identity")
    exchange = Exchange(spec.target.request_url, ctx.budget.bound(ctx.options.timeout))
    try:
        exchange.send(request_body(spec, stream=scenario.stream), spec.request_headers())
        during = _hold_open(exchange, spec.target.protocol, scenario, watch, before)
    except ExchangeError as exc:
        raise Unobservable(f"{scenario.describe}: {describe_error(exc)}") from None
    finally:
        exchange.close()
    closed_at = time.monotonic()
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
    return Observation(scenario, max_tokens, before, during, closed_at, down, counts, end)
