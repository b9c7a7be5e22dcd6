"""The prober against the simulator, which stamps when it wrote each event."""

from __future__ import annotations

import itertools
import statistics
import sys
import tracemalloc
from collections.abc import Iterator

import pytest

from streamobs.probe import Degraded, Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.probe.batch import run_batch
from streamobs.probe.result import ProbeResult
from streamobs.simulator import FAULT_HEADER, Simulator, SimulatorConfig
from tests.scripted_server import SSE_HEADERS, ScriptedServer, chunk, send

MS = 1_000_000
TIMEOUTS = Timeouts(connect=2, headers=3, first_token=3, total=6)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.05, itl=0.01, stall_seconds=10)) as sim:
        yield sim


def spec_for(sim: Simulator, fault: str | None = None, **kwargs: object) -> ProbeSpec:
    headers = {FAULT_HEADER: fault} if fault else {}
    options: dict[str, object] = {"timeouts": TIMEOUTS, "max_tokens": 20, **kwargs}
    return ProbeSpec(
        target=parse_target(sim.url),
        model=sim.config.model,
        headers=headers,
        **options,  # type: ignore[arg-type]
    )


def test_timings_match_what_the_simulator_wrote(simulator: Simulator) -> None:
    """Median over a batch, so one descheduled probe on a busy machine cannot flake it."""
    results = run_batch(spec_for(simulator), count=15, concurrency=1)
    ttft_err, tpot_err, e2e_err, itl_err = [], [], [], []
    for result in results:
        assert result.outcome is Outcome.OK, result.error
        assert result.response_id is not None
        record = simulator.request_log(result.response_id)
        assert record is not None and record.done_write_ns is not None
        writes = record.token_write_ns
        assert result.output_tokens == len(writes) == 20
        assert result.output_tokens_source == "usage"
        assert result.first_token_ns is not None and result.done_ns is not None
        if not result.exact:
            continue  # late reads on a loaded machine: the probe says so, and is left out
        # The same definitions on both sides: from the request (its last byte leaving the
        # client, its last byte reaching the simulator) to the first token and the end.
        ttft_err.append(result.first_token_ns - (writes[0] - record.received_ns))
        e2e_err.append(result.done_ns - (record.done_write_ns - record.received_ns))
        sim_tpot = (writes[-1] - writes[0]) / (len(writes) - 1)
        assert result.tpot_ns is not None
        tpot_err.append(result.tpot_ns - sim_tpot)
        sim_gaps = [b - a for a, b in itertools.pairwise(writes)]
        itl_err.extend(abs(c - s) for c, s in zip(result.itl_ns, sim_gaps, strict=True))
    # Signed errors (loopback transit shifts them by microseconds either way): the bound
    # applies to the magnitude of the median.
    if not ttft_err:
        return  # every probe was degraded (a starved machine): nothing exact to compare
    assert abs(statistics.median(ttft_err)) < 2 * MS
    assert abs(statistics.median(e2e_err)) < 2 * MS
    assert abs(statistics.median(tpot_err)) < 2 * MS
    assert statistics.median(itl_err) < 2 * MS


def test_the_simulated_ttft_is_what_the_probe_reports(simulator: Simulator) -> None:
    simulator.reconfigure(ttft=0.3)
    results = run_batch(spec_for(simulator), count=5, concurrency=5)
    ttfts = [r.first_token_ns for r in results if r.first_token_ns is not None]
    assert len(ttfts) == 5
    assert statistics.median(ttfts) == pytest.approx(0.3e9, abs=30 * MS)


@pytest.mark.parametrize(
    "fault,outcome",
    [
        ("http_500", Outcome.HTTP_STATUS),
        ("http_429", Outcome.HTTP_STATUS),
        ("error_event", Outcome.STREAM_ERROR),
        ("truncate", Outcome.TRUNCATED),
        ("reset", Outcome.TRUNCATED),
        ("stall", Outcome.TIMEOUT_FIRST_TOKEN),
        ("hang", Outcome.TIMEOUT_HEADERS),
        ("malformed", Outcome.MALFORMED),
        ("not_sse", Outcome.NOT_SSE),
        ("oversize", Outcome.TOO_LARGE),
        ("none", Outcome.OK),
    ],
)
def test_each_fault_is_classified(simulator: Simulator, fault: str, outcome: Outcome) -> None:
    timeouts = Timeouts(connect=1, headers=1, first_token=1, total=3)
    result = run_probe(spec_for(simulator, fault, timeouts=timeouts))
    assert result.outcome is outcome, result.error
    if outcome is Outcome.HTTP_STATUS:
        assert result.http_status == int(fault.split("_")[1])
        assert result.events == 0


def test_engine_dead_stream_then_done_is_never_ok(simulator: Simulator) -> None:
    result = run_probe(spec_for(simulator, "error_event"))
    assert result.outcome is Outcome.STREAM_ERROR
    assert result.http_status == 200 and result.content_events > 0
    assert result.error is not None and "EngineCore" in result.error


def test_unknown_model_is_http_status_404(simulator: Simulator) -> None:
    spec = ProbeSpec(target=parse_target(simulator.url), model="nope", timeouts=TIMEOUTS)
    result = run_probe(spec)
    assert result.outcome is Outcome.HTTP_STATUS and result.http_status == 404
    assert result.error is not None and "does not exist" in result.error


def test_probe_closes_the_connection_so_generation_stops(simulator: Simulator) -> None:
    simulator.reconfigure(ttft=0.01, itl=0.05)
    timeouts = Timeouts(connect=1, headers=1, first_token=1, total=0.5)
    result = run_probe(spec_for(simulator, timeouts=timeouts, max_tokens=200))
    assert result.outcome is Outcome.TIMEOUT_TOTAL
    assert result.response_id is not None
    record = simulator.request_log(result.response_id, wait=3)
    assert record is not None
    assert record.client_disconnected
    assert record.tokens_sent < 50


def test_oversized_line_is_too_large_with_memory_bounded() -> None:
    # A scripted upstream rather than the in-process simulator: tracemalloc counts every
    # thread, and the server must not be what this measures.
    block = b"x" * 65536
    parts = [SSE_HEADERS, chunk(b"data: " + block), *(chunk(block) for _ in range(127))]
    line_bound = 1 << 20
    with ScriptedServer(send(*parts)) as server:
        tracemalloc.start()
        try:
            result = run_probe(
                ProbeSpec(target=parse_target(server.url), model="m", timeouts=TIMEOUTS)
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.outcome is Outcome.TOO_LARGE
    assert result.bytes_received < 2 * line_bound  # stopped reading at the bound
    assert peak < 4 * line_bound  # while the server offered 8 MiB


def test_buffered_server_is_flagged(simulator: Simulator) -> None:
    result = run_probe(spec_for(simulator, "buffered"))
    assert result.outcome is Outcome.OK
    assert result.delivery is not None and result.delivery.buffered
    healthy = run_probe(spec_for(simulator))
    assert healthy.delivery is not None and not healthy.delivery.buffered


def test_completions_endpoint(simulator: Simulator) -> None:
    spec = ProbeSpec(
        target=parse_target(simulator.url + "/v1/completions"),
        model="sim",
        timeouts=TIMEOUTS,
        max_tokens=8,
    )
    result = run_probe(spec)
    assert result.outcome is Outcome.OK and result.output_tokens == 8


def ten_seconds_of_keepalives() -> Iterator[tuple[Simulator, ProbeResult]]:
    config = SimulatorConfig(model="sim", ttft=10.0, itl=0.01, keepalive=0.5)
    with Simulator(config) as sim:
        timeouts = Timeouts(connect=2, headers=2, first_token=15, total=20)
        yield sim, run_probe(spec_for(sim, timeouts=timeouts, max_tokens=5))


def test_keepalives_before_the_first_token_do_not_count() -> None:
    for sim, result in ten_seconds_of_keepalives():
        assert result.outcome is Outcome.OK, result.error
        assert result.keepalives >= 15
        assert result.response_id is not None
        record = sim.request_log(result.response_id)
        assert record is not None and len(record.keepalive_write_ns) == result.keepalives
        assert result.first_token_ns is not None
        assert result.first_token_ns - (record.token_write_ns[0] - record.received_ns) < 5 * MS
        assert result.first_token_ns == pytest.approx(10e9, abs=0.1e9)


def test_plain_tcp_stamps_come_from_the_kernel_at_both_ends(simulator: Simulator) -> None:
    if sys.platform != "linux":
        pytest.skip("kernel timestamps are used on Linux only")
    results = run_batch(spec_for(simulator), count=5, concurrency=1)
    for result in results:
        assert result.outcome is Outcome.OK, result.error
        assert result.timing.sent_by_kernel
        assert result.timing.degraded is not Degraded.NO_KERNEL_STAMPS
    # A probe that says its stamps are exact has them where the bytes reached the host:
    # next to the simulator's kernel-stamped writes (a loaded machine makes probes late,
    # and those say so instead).
    for result in (r for r in results if r.exact):
        assert result.response_id is not None
        record = simulator.request_log(result.response_id)
        assert record is not None
        sent = result.start_ns + (result.request_sent_ns or 0)
        errors = [
            abs(sent + arrival - write)
            for arrival, write in zip(result.token_arrivals_ns, record.token_write_ns, strict=True)
        ]
        assert statistics.median(errors) < 0.5 * MS
