"""Through a real nginx: gzip on event streams is caught as buffered; the seed config is not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.probe.result import ProbeResult
from tests.nginx import GZIP_EVENT_STREAMS, STREAMING_SEED, Nginx
from tests.scripted_server import ScriptedServer, token_stream
from tests.under_load import cores, start_loopers, stop

TOKENS, ITL = 40, 0.02


def probe_through(location_config: str, accept_encoding: str = "gzip, deflate") -> ProbeResult:
    with (
        ScriptedServer(token_stream(TOKENS, ITL, ttft=0.05)) as upstream,
        Nginx(upstream.url, location_config) as nginx,
    ):
        spec = ProbeSpec(
            target=parse_target(nginx.url),
            model="m",
            timeouts=Timeouts(connect=2, headers=5, first_token=5, total=10),
            accept_encoding=accept_encoding,
        )
        return run_probe(spec)


def test_gzip_on_event_streams_is_flagged_buffered() -> None:
    # gzip with nginx's default proxy buffering holds the compressed stream until the end.
    result = probe_through(GZIP_EVENT_STREAMS)
    assert result.outcome is Outcome.OK, result.error
    assert result.content_encoding == "gzip"
    assert result.delivery is not None
    assert result.delivery.buffered
    assert result.delivery.largest_burst >= TOKENS // 2
    assert result.output_tokens == TOKENS
    # The whole stream arrives at the end: TTFT is close to e2e.
    assert result.first_token_ns is not None and result.done_ns is not None
    assert result.done_ns - result.first_token_ns < 0.2 * result.done_ns


def test_seed_streaming_config_is_not_buffered() -> None:
    result = probe_through(STREAMING_SEED)
    assert result.outcome is Outcome.OK, result.error
    assert result.content_encoding is None
    assert result.delivery is not None
    assert not result.delivery.buffered
    assert result.delivery.largest_burst <= 2
    assert result.delivery.events_per_read == pytest.approx(1.0, abs=0.25)
    gaps = sorted(result.itl_ns)
    assert gaps[len(gaps) // 2] == pytest.approx(ITL * 1e9, rel=0.5)


def test_a_client_that_refuses_gzip_would_miss_the_problem() -> None:
    # Why the probe sends the Accept-Encoding SDK clients send: with identity the same
    # misconfigured nginx streams fine, so a probe that never asks for gzip sees no fault.
    result = probe_through(GZIP_EVENT_STREAMS, accept_encoding="identity")
    assert result.outcome is Outcome.OK
    assert result.delivery is not None and not result.delivery.buffered


@contextmanager
def every_core_busy() -> Iterator[None]:
    loopers = start_loopers(cores(), limit_s=120)
    try:
        yield
    finally:
        stop(loopers)


@pytest.mark.parametrize("config,buffered", [(GZIP_EVENT_STREAMS, True), (STREAMING_SEED, False)])
def test_the_buffered_verdict_holds_while_every_core_is_busy(config: str, buffered: bool) -> None:
    # CPU starvation makes the probe late to read and the kernel coalesce what queued
    # meanwhile: that is the probe's own lateness (degraded), never the path's buffering.
    with every_core_busy():
        results = [probe_through(config) for _ in range(4)]
    for result in results:
        assert result.outcome is Outcome.OK, result.error
        assert result.delivery is not None
        assert result.delivery.buffered is buffered, result.timing
