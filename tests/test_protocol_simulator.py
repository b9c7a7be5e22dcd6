"""The prober against the simulator on every protocol: the same timing bounds as chat
(median versus the simulator's own write stamps), every fault produced and classified,
reasoning and tool-call output counted from their own fields."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterator

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.probe.batch import run_batch
from streamobs.simulator import FAULT_HEADER, Simulator, SimulatorConfig
from tests.fixtures import run_cli

MS = 1_000_000
TIMEOUTS = Timeouts(connect=2, headers=3, first_token=3, total=6)
PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}
PROTOCOLS = list(PATHS)
TOOL_PROTOCOLS = ["chat", "responses", "messages"]


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim", ttft=0.05, itl=0.01, stall_seconds=10)) as sim:
        yield sim


def spec_for(
    sim: Simulator, endpoint: str, fault: str | None = None, **kwargs: object
) -> ProbeSpec:
    headers = {FAULT_HEADER: fault} if fault else {}
    options: dict[str, object] = {"timeouts": TIMEOUTS, "max_tokens": 20, **kwargs}
    return ProbeSpec(
        target=parse_target(sim.url, endpoint),
        model=sim.config.model,
        headers=headers,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("endpoint", PROTOCOLS)
def test_timings_match_what_the_simulator_wrote(simulator: Simulator, endpoint: str) -> None:
    """The chat bounds, on every protocol: medians over a batch, exact probes only."""
    results = run_batch(spec_for(simulator, endpoint), count=12, concurrency=1)
    ttft_err, tpot_err, e2e_err, itl_err = [], [], [], []
    for result in results:
        assert result.outcome is Outcome.OK, result.error
        assert result.endpoint == endpoint
        assert result.response_id is not None
        record = simulator.request_log(result.response_id)
        assert record is not None and record.done_write_ns is not None
        assert record.endpoint == PATHS[endpoint]
        writes = record.token_write_ns
        assert result.output_tokens == len(writes) == result.content_events == 20
        # Usage where each protocol sends it; completions asked for it in stream_options.
        assert result.output_tokens_source == "usage"
        assert result.first_token_ns is not None and result.done_ns is not None
        if not result.exact:
            continue  # late reads on a loaded machine: the probe says so, and is left out
        ttft_err.append(result.first_token_ns - (writes[0] - record.received_ns))
        e2e_err.append(result.done_ns - (record.done_write_ns - record.received_ns))
        sim_tpot = (writes[-1] - writes[0]) / (len(writes) - 1)
        assert result.tpot_ns is not None
        tpot_err.append(result.tpot_ns - sim_tpot)
        sim_gaps = [b - a for a, b in itertools.pairwise(writes)]
        itl_err.extend(abs(c - s) for c, s in zip(result.itl_ns, sim_gaps, strict=True))
    if not ttft_err:
        return  # every probe was degraded (a starved machine): nothing exact to compare
    assert abs(statistics.median(ttft_err)) < 2 * MS
    assert abs(statistics.median(e2e_err)) < 2 * MS
    assert abs(statistics.median(tpot_err)) < 2 * MS
    assert statistics.median(itl_err) < 2 * MS


FAULT_OUTCOMES = [
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
]


@pytest.mark.parametrize("endpoint", PROTOCOLS)
@pytest.mark.parametrize(("fault", "outcome"), FAULT_OUTCOMES)
def test_each_fault_on_each_protocol_is_classified(
    simulator: Simulator, endpoint: str, fault: str, outcome: Outcome
) -> None:
    timeouts = Timeouts(connect=1, headers=1, first_token=1, total=3)
    result = run_probe(spec_for(simulator, endpoint, fault, timeouts=timeouts))
    assert result.outcome is outcome, result.error
    (record,) = [r for r in simulator.records() if r.fault == fault]
    assert record.endpoint == PATHS[endpoint]
    if outcome is Outcome.HTTP_STATUS:
        assert result.http_status == int(fault.split("_")[1])
        assert result.error is not None and "injected by the simulator" in result.error
    if fault == "error_event":
        assert result.content_events == 10  # half the tokens, then the error
        assert result.error is not None and "EngineCore encountered an issue" in result.error


@pytest.mark.parametrize("endpoint", PROTOCOLS)
def test_unknown_model_is_http_status_with_the_message(simulator: Simulator, endpoint: str) -> None:
    spec = ProbeSpec(target=parse_target(simulator.url, endpoint), model="nope", timeouts=TIMEOUTS)
    result = run_probe(spec)
    assert result.outcome is Outcome.HTTP_STATUS and result.http_status == 404
    assert result.error is not None and "The model `nope` does not exist" in result.error


@pytest.mark.parametrize("endpoint", PROTOCOLS)
def test_reasoning_is_counted_from_its_own_field(simulator: Simulator, endpoint: str) -> None:
    simulator.reconfigure(reasoning_tokens=6, itl=0.005)
    result = run_probe(spec_for(simulator, endpoint))
    assert result.outcome is Outcome.OK, result.error
    assert result.output_tokens == result.content_events == 20
    if endpoint == "completions":  # a text completion has no reasoning field
        assert result.reasoning_events == 0
        assert result.first_answer_ns == result.first_token_ns
        return
    assert result.reasoning_events == 6 and result.tool_call_events == 0
    assert result.first_token_ns is not None and result.first_answer_ns is not None
    # The first answer token is the seventh token: six gaps of about 5 ms later.
    assert result.first_answer_ns - result.first_token_ns == pytest.approx(
        result.token_arrivals_ns[6] - result.token_arrivals_ns[0]
    )
    assert result.first_answer_ns > result.first_token_ns
    if endpoint == "responses":
        assert result.reasoning_tokens == 6


def test_chat_reasoning_content_field_counts_as_reasoning(simulator: Simulator) -> None:
    simulator.reconfigure(reasoning_tokens=4, reasoning_field="reasoning_content")
    result = run_probe(spec_for(simulator, "chat"))
    assert result.outcome is Outcome.OK, result.error
    assert result.reasoning_events == 4 and result.content_events == 20


@pytest.mark.parametrize("endpoint", TOOL_PROTOCOLS)
def test_tool_call_path_is_probed_and_timed(simulator: Simulator, endpoint: str) -> None:
    simulator.reconfigure(reasoning_tokens=3)
    result = run_probe(spec_for(simulator, endpoint, tool_call=True))
    assert result.outcome is Outcome.OK, result.error
    assert (result.content_events, result.reasoning_events, result.tool_call_events) == (20, 3, 17)
    assert result.first_tool_call_ns is not None and result.first_token_ns is not None
    assert result.first_tool_call_ns == result.first_answer_ns > result.first_token_ns
    assert result.first_tool_call_ns == result.token_arrivals_ns[3]
    if endpoint == "messages":
        assert result.finish_reason == "tool_use"
    without = run_probe(spec_for(simulator, endpoint))
    assert without.outcome is Outcome.OK and without.tool_call_events == 0


@pytest.mark.parametrize("endpoint", PROTOCOLS)
def test_buffered_stream_is_flagged_on_every_protocol(simulator: Simulator, endpoint: str) -> None:
    result = run_probe(spec_for(simulator, endpoint, "buffered"))
    assert result.outcome is Outcome.OK, result.error
    assert result.delivery is not None and result.delivery.buffered


@pytest.mark.parametrize("endpoint", ["responses", "messages"])
def test_cli_probe_with_endpoint_and_tool_call(simulator: Simulator, endpoint: str) -> None:
    done = run_cli(
        "probe", simulator.url, "--endpoint", endpoint, "--tool-call", "--max-tokens", "6",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["probes"]
    assert result["endpoint"] == endpoint and result["outcome"] == "ok"
    assert result["tool_call_events"] == 6 and result["seconds"]["first_tool_call"] > 0
    by_url = run_cli("probe", simulator.url + PATHS[endpoint], "--max-tokens", "3", "--json")
    assert json.loads(by_url.stdout)["probes"][0]["endpoint"] == endpoint


def test_cli_probe_refuses_tool_call_on_completions(simulator: Simulator) -> None:
    done = run_cli("probe", simulator.url + "/v1/completions", "--tool-call", "--model", "sim")
    assert done.returncode == 2 and "no tool calls" in done.stderr


@pytest.mark.parametrize("endpoint", PROTOCOLS)
def test_batched_deltas_count_tokens_from_usage(simulator: Simulator, endpoint: str) -> None:
    """Tokens held inside a UTF-8 character send no text (chat: an empty chunk): fewer
    output events than tokens, the usage still counts them all and TPOT divides by it."""
    simulator.reconfigure(partial_utf8_every=3)
    results = run_batch(spec_for(simulator, endpoint), count=5, concurrency=1)
    tpot_err = []
    for result in results:
        assert result.outcome is Outcome.OK, result.error
        assert (result.output_tokens, result.output_tokens_source) == (20, "usage")
        assert result.response_id is not None
        record = simulator.request_log(result.response_id)
        assert record is not None
        assert result.content_events == len(record.token_write_ns) == 20 - 6
        if result.exact:
            assert result.tpot_ns is not None
            writes = record.token_write_ns
            tpot_err.append(result.tpot_ns - (writes[-1] - writes[0]) / 19)
    if tpot_err:
        assert abs(statistics.median(tpot_err)) < 2 * MS
