"""streamobs doctor without a proxy: verdict rules on scripted numbers, and the command line."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from streamobs.collectors.engines.scrape import snapshot_from_text
from streamobs.doctor import cli
from streamobs.doctor.checks import buffering, compression, disconnect, errors, headers, long_stream
from streamobs.doctor.checks.disconnect import MID_STREAM, WHILE_SILENT, Observation
from streamobs.doctor.engine import EngineCounts, EngineUnavailable, counts_from
from streamobs.doctor.options import Budget
from streamobs.doctor.probes import Pace
from streamobs.doctor.runner import Report
from streamobs.doctor.verdict import CheckResult, Verdict, worst
from streamobs.probe import Delivery, Outcome, ProbeResult
from streamobs.simulator import Simulator, SimulatorConfig
from streamobs.traces.records import ServerSpan
from tests.fixtures import FIXTURES, settled

MS = 1_000_000


def probe(
    *,
    outcome: Outcome = Outcome.OK,
    ttft: float = 0.05,
    e2e: float = 0.4,
    tokens: int = 32,
    buffered: bool = False,
    largest_burst: int = 1,
    burst_share: float = 0.0,
    encoding: str | None = None,
    status: int | None = 200,
    end: float | None = None,
    error: str | None = None,
) -> ProbeResult:
    """A ProbeResult with the figures the checks read; times in seconds."""
    ok = outcome is Outcome.OK
    step = (e2e - ttft) / max(tokens - 1, 1)
    arrivals = tuple(round((ttft + i * step) * 1e9) for i in range(tokens)) if ok else ()
    return ProbeResult(
        url="http://127.0.0.1:1/v1/chat/completions",
        endpoint="chat",
        model="m",
        outcome=outcome,
        start_ns=0,
        started_at=0.0,
        first_token_ns=round(ttft * 1e9) if ok else None,
        last_token_ns=arrivals[-1] if arrivals else None,
        done_ns=round(e2e * 1e9) if ok else None,
        end_ns=round((end if end is not None else e2e) * 1e9),
        token_arrivals_ns=arrivals,
        output_tokens=tokens if ok else None,
        output_tokens_source="usage" if ok else None,
        prompt_tokens=20,
        content_events=tokens if ok else 0,
        delivery=Delivery(
            reads=tokens,
            reads_with_events=tokens,
            events_per_read=1.0 if not buffered else float(tokens),
            largest_burst=largest_burst,
            burst_share=burst_share,
            buffered=buffered,
        )
        if ok
        else None,
        http_status=status,
        content_encoding=encoding,
        error=error,
    )


BUFFERED = {"buffered": True, "largest_burst": 32, "burst_share": 1.0, "ttft": 0.4}


# -- buffering ----------------------------------------------------------------------------
def test_buffering_passes_a_stream_delivered_token_by_token() -> None:
    result = buffering.evaluate(probe(), probe(ttft=0.04))
    assert result.verdict is Verdict.PASS
    assert result.fix is None
    assert result.evidence["ttft_added_by_path_seconds"] == pytest.approx(0.01)
    assert [line.split()[0] for line in result.details[:2]] == ["path", "direct"]


def test_buffering_fails_a_burst_stream_and_names_the_fix() -> None:
    result = buffering.evaluate(probe(**BUFFERED, encoding="gzip"), probe())
    assert result.verdict is Verdict.FAIL
    # The verdict names the compression that holds the stream back.
    assert "compresses the stream with gzip" in result.summary
    assert "32 of 32 content events arrived together" in result.summary
    assert result.fix is not None and "proxy_buffering off" in result.fix
    assert result.fix.index("gzip off") < result.fix.index("proxy_buffering off")
    plain = buffering.evaluate(probe(**BUFFERED), probe())
    assert plain.verdict is Verdict.FAIL and "gzip" not in plain.summary
    assert "tokens are held back and burst: 32 of 32 content events" in plain.summary
    assert result.evidence["ttft_share_of_e2e"] == pytest.approx(1.0)
    assert any("Content-Encoding: gzip" in line for line in result.details)


def test_buffering_already_at_the_direct_url_points_at_the_server() -> None:
    result = buffering.evaluate(probe(**BUFFERED), probe(**BUFFERED))
    assert result.verdict is Verdict.FAIL
    assert result.fix == buffering.FIX_SERVER


def test_buffering_warns_on_partial_bursts_and_judges_nothing_on_few_tokens() -> None:
    assert buffering.evaluate(probe(burst_share=0.4, largest_burst=3), None).verdict is (
        Verdict.WARN
    )
    assert buffering.evaluate(probe(tokens=2), None).verdict is Verdict.INCONCLUSIVE


def test_buffering_is_inconclusive_when_the_probe_itself_read_too_late() -> None:
    from dataclasses import replace

    from streamobs.probe import Degraded, TimingQuality

    late = TimingQuality(degraded=Degraded.LATE_READS, max_error_ns=40_000_000)
    bursty = replace(probe(burst_share=0.4, largest_burst=3), timing=late)
    result = buffering.evaluate(bursty, None)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "read too late" in result.summary and result.evidence["timing_degraded"] == "late_reads"
    # Bursts it could vouch for still fail the path, however late the probe was otherwise.
    held = replace(probe(**BUFFERED, encoding="gzip"), timing=late)
    assert buffering.evaluate(held, None).verdict is Verdict.FAIL


def test_buffering_failed_stream_fails_unless_the_server_fails_too() -> None:
    broken = probe(outcome=Outcome.TRUNCATED, error="cut")
    assert buffering.evaluate(broken, probe()).verdict is Verdict.FAIL
    assert buffering.evaluate(broken, None).verdict is Verdict.FAIL
    assert buffering.evaluate(broken, broken).verdict is Verdict.INCONCLUSIVE


# -- compression --------------------------------------------------------------------------
def test_compression_passes_when_the_stream_is_not_compressed() -> None:
    assert compression.evaluate(probe(), probe()).verdict is Verdict.PASS


def test_compression_that_holds_tokens_back_fails() -> None:
    result = compression.evaluate(probe(**BUFFERED, encoding="gzip"), probe())
    assert result.verdict is Verdict.FAIL
    assert "TTFT 0.400 s with gzip vs 0.050 s without" in result.summary
    assert result.fix is not None and "gzip off" in result.fix
    assert result.evidence["ttft_delay_seconds"] == pytest.approx(0.35)


def test_compression_that_still_streams_is_a_warning() -> None:
    result = compression.evaluate(probe(encoding="gzip", ttft=0.06), probe())
    assert result.verdict is Verdict.WARN
    assert "still streams" in result.summary


def test_compression_for_a_client_that_refused_it_fails() -> None:
    result = compression.evaluate(probe(encoding="gzip"), probe(encoding="br"))
    assert result.verdict is Verdict.FAIL


def test_compression_without_streams_to_compare_is_inconclusive() -> None:
    failed = probe(outcome=Outcome.CONNECT, status=None)
    assert compression.evaluate(failed, probe()).verdict is Verdict.INCONCLUSIVE


# -- headers ------------------------------------------------------------------------------
VLLM_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked"}


def test_headers_of_vllm_itself_pass_with_each_meaning() -> None:
    result = headers.evaluate(headers.Sample(200, "HTTP/1.1", VLLM_HEADERS))
    assert result.verdict is Verdict.PASS
    text = "\n".join(result.details)
    for name in ("Content-Type", "Cache-Control", "X-Accel-Buffering", "Content-Encoding"):
        assert name in text
    assert "HTTP/1.1" in text
    assert result.evidence["headers"]["Cache-Control"] is None


@pytest.mark.parametrize(
    ("extra", "version", "flagged", "verdict"),
    [
        ({"content-encoding": "gzip"}, "HTTP/1.1", "Content-Encoding", Verdict.WARN),
        ({"cache-control": "public, max-age=60"}, "HTTP/1.1", "Cache-Control", Verdict.WARN),
        ({"x-accel-buffering": "yes"}, "HTTP/1.1", "X-Accel-Buffering", Verdict.WARN),
        ({}, "HTTP/1.0", "HTTP version", Verdict.WARN),
        ({"content-type": "application/json"}, "HTTP/1.1", "Content-Type", Verdict.FAIL),
    ],
)
def test_headers_flag_what_hurts_streaming(
    extra: dict[str, str], version: str, flagged: str, verdict: Verdict
) -> None:
    result = headers.evaluate(headers.Sample(200, version, {**VLLM_HEADERS, **extra}))
    assert result.verdict is verdict
    assert flagged in result.summary
    assert result.fix


def test_headers_content_length_means_the_stream_was_held() -> None:
    held = {"content-type": "text/event-stream", "content-length": "1234"}
    sample = headers.Sample(200, "HTTP/1.1", held)
    result = headers.evaluate(sample)
    assert result.verdict is Verdict.WARN and "Content-Length" in result.summary
    no_cache = headers.Sample(200, "HTTP/1.1", {**VLLM_HEADERS, "cache-control": "no-cache"})
    assert headers.evaluate(no_cache).verdict is Verdict.PASS


def test_headers_of_a_failed_request_fail() -> None:
    result = headers.evaluate(headers.Sample(502, "HTTP/1.1", {}, "Bad Gateway"))
    assert result.verdict is Verdict.FAIL and "HTTP 502" in result.summary


# -- errors -------------------------------------------------------------------------------
def reply(status: int | None, message: str | None = None, **kw: str) -> errors.Reply:
    return errors.Reply("bad_model", "unknown model", status, message=message, seconds=0.01, **kw)


def test_error_replies_are_judged() -> None:
    assert errors.judge(reply(404, "The model `x` does not exist."))[0] is Verdict.PASS
    verdict, line, fix = errors.judge(reply(200, content_type="text/event-stream"))
    assert verdict is Verdict.FAIL and "HTTP 200" in line and fix == errors.FIX_200
    verdict, _, fix = errors.judge(reply(404, content_type="text/html"))
    assert verdict is Verdict.WARN and fix is not None and "proxy_intercept_errors" in fix
    assert errors.judge(reply(500, "boom"))[0] is Verdict.WARN
    assert errors.judge(reply(None, error="timed out"))[0] is Verdict.FAIL


def test_errors_check_takes_the_worst_reply() -> None:
    result = errors.evaluate([reply(404, "no such model"), reply(200)])
    assert result.verdict is Verdict.FAIL
    assert result.evidence["bad_model"]["status"] == 200
    assert errors.evaluate([reply(404, "a"), reply(400, "b")]).verdict is Verdict.PASS


# -- disconnect ---------------------------------------------------------------------------
def counts(running: float, generated: float, at: float) -> EngineCounts:
    return EngineCounts(running=running, generated=generated, at=at)


def observation(
    *,
    before: tuple[float, float] = (0, 1000),
    down: tuple[float, float] | None = (0, 1005),
    window_end: tuple[float, float] | None = None,
    max_tokens: int = 700,
    events: int = 3,
    span: ServerSpan | None = None,
) -> Observation:
    """Everything after the close (at 10.0): the client had the request open for 1 s."""
    start = counts(*down, at=10.1) if down is not None else counts(1, 1205, at=12.0)
    end_values = window_end or (start.running, start.generated)
    return Observation(
        scenario=MID_STREAM,
        max_tokens=max_tokens,
        before=counts(*before, at=9.0),
        open_seconds=1.0,
        events_before_close=events,
        closed_at=10.0,
        down=start if down is not None else None,
        window_start=start,
        window_end=counts(*end_values, at=start.at + 1.0),
        span=span,
    )


def own_span(tokens: int, e2e: float) -> ServerSpan:
    return ServerSpan(
        "ab" * 16, "cd" * 8, "ef" * 8, 1, 2, e2e_seconds=e2e, completion_tokens=tokens
    )


def test_disconnect_passes_when_running_drops_and_tokens_stop() -> None:
    verdict, line = disconnect.judge(observation())
    assert verdict is Verdict.PASS
    assert "first scrape after the close, 0.10 s later" in line


def test_disconnect_fails_when_the_server_keeps_generating() -> None:
    verdict, line = disconnect.judge(observation(down=None, window_end=(1, 1305)))
    assert verdict is Verdict.FAIL
    assert "100 tokens/s" in line


def test_disconnect_fails_when_every_token_was_generated_for_nobody() -> None:
    # Running back to 0 and nothing more generated, but only because it ran to the end.
    obs = observation(down=(0, 1700), window_end=(0, 1700), max_tokens=700)
    assert disconnect.judge(obs)[0] is Verdict.FAIL


def test_disconnect_on_a_busy_server_is_inconclusive_not_a_guess() -> None:
    # Others running before and still generating after ours went away.
    busy = observation(before=(2, 1000), down=(2, 1060), window_end=(2, 1160))
    verdict, line = disconnect.judge(busy)
    assert verdict is Verdict.INCONCLUSIVE
    assert "other requests" in line
    # Same, with running never dropping: still no guess.
    stuck = observation(before=(2, 1000), down=None, window_end=(3, 1400))
    assert disconnect.judge(stuck)[0] is Verdict.INCONCLUSIVE
    # Idle before, but another request arrived after ours was closed.
    late = observation(down=None, window_end=(2, 1400))
    assert disconnect.judge(late)[0] is Verdict.INCONCLUSIVE


def test_disconnect_not_seen_in_the_metrics_is_inconclusive() -> None:
    # Three content events reached the client, yet the metrics count fewer tokens.
    unseen = observation(down=(0, 1002), window_end=(0, 1002))
    verdict, line = disconnect.judge(unseen)
    assert verdict is Verdict.INCONCLUSIVE and "--metrics" in line


def test_disconnect_by_the_requests_own_span() -> None:
    # The span wins over the metrics (which here would say it kept going).
    stopped = observation(down=None, window_end=(1, 1305), span=own_span(5, 1.05))
    verdict, line = disconnect.judge(stopped)
    assert verdict is Verdict.PASS
    assert "stopped 0.05 s after the client left, at 5 of 700 tokens" in line
    assert "3 content events had reached it: at most 2 tokens after it left" in line
    everything = observation(span=own_span(700, 15.0))
    verdict, line = disconnect.judge(everything)
    assert verdict is Verdict.FAIL and "all 700 tokens for nobody" in line
    slow = observation(span=own_span(300, 6.0))
    assert disconnect.judge(slow)[0] is Verdict.INCONCLUSIVE
    # A span without usage says nothing: back to the metrics.
    bare = observation(span=ServerSpan("ab" * 16, "cd" * 8, None, 1, 2, e2e_seconds=1.0))
    assert disconnect.judge(bare)[0] is Verdict.PASS
    assert observation(span=own_span(5, 1.05)).evidence()["span"]["completion_tokens"] == 5


def test_disconnect_check_fails_on_either_scenario_with_its_fix() -> None:
    good = observation()
    bad = replace(observation(down=None, window_end=(1, 1305)), scenario=WHILE_SILENT)
    result = disconnect.evaluate([good, bad], [])
    assert result.verdict is Verdict.FAIL
    assert result.fix == disconnect.FIX_SILENT
    assert result.evidence["while_silent"]["running_down_after_close_seconds"] is None
    assert any("request_success_total" in line for line in result.details)
    assert disconnect.evaluate([good], ["while silent: not run"]).verdict is Verdict.INCONCLUSIVE
    assert disconnect.evaluate([good, good], []).verdict is Verdict.PASS


def test_engine_counts_come_from_vllm_metrics() -> None:
    snapshot = snapshot_from_text((FIXTURES / "metrics.txt").read_text())
    found = counts_from(snapshot, "tiny", at=1.0)
    assert found.running == 0 and found.generated == 1604
    # A served-model alias that the labels do not name: the server as a whole.
    assert counts_from(snapshot, "alias", at=1.0).generated == 1604
    with pytest.raises(EngineUnavailable, match="no vllm:num_requests_running"):
        counts_from(snapshot_from_text("# TYPE x gauge\nx 1\n"), "tiny", at=1.0)


# -- long streams -------------------------------------------------------------------------
PACE = Pace(ttft=0.05, per_token=0.01, prompt_tokens=20, source="direct")


def test_long_stream_pace_sizes_the_request() -> None:
    assert PACE.tokens_lasting(8.05) == 801
    assert PACE.tokens_lasting(0.01) == 16


def test_long_streams_that_survive_pass() -> None:
    result = long_stream.evaluate(
        probe(e2e=8.2, tokens=800), long_stream.SilentReply(200, 8.1), 7.0, 800, PACE
    )
    assert result.verdict is Verdict.PASS
    assert result.evidence["non_streamed"]["status"] == 200


def test_a_read_timeout_cutting_the_silent_request_fails() -> None:
    result = long_stream.evaluate(
        probe(e2e=8.2, tokens=800), long_stream.SilentReply(504, 5.0), 7.0, 800, PACE
    )
    assert result.verdict is Verdict.FAIL
    assert "HTTP 504 after 5.0 s" in result.details[1]
    assert result.fix is not None and "proxy_read_timeout" in result.fix


def test_a_cut_stream_fails_and_a_short_one_says_nothing() -> None:
    cut = probe(outcome=Outcome.TRUNCATED, end=60.0, error="connection closed")
    assert long_stream.judge_stream(cut, 75.0)[0] is Verdict.FAIL
    assert long_stream.judge_stream(probe(e2e=3.0), 7.0)[0] is Verdict.INCONCLUSIVE
    refused = probe(outcome=Outcome.HTTP_STATUS, status=400, error="HTTP 400: too long")
    assert long_stream.judge_stream(refused, 7.0)[0] is Verdict.INCONCLUSIVE
    closed = long_stream.SilentReply(None, 60.0, error="connection closed without a response")
    assert long_stream.judge_silent(closed, 75.0)[0] is Verdict.FAIL
    assert long_stream.judge_silent(long_stream.SilentReply(200, 2.0), 7.0)[0] is (
        Verdict.INCONCLUSIVE
    )


# -- verdicts, budget, report ---------------------------------------------------------------
def test_worst_verdict_and_exit_code() -> None:
    assert worst([Verdict.PASS, Verdict.WARN]) is Verdict.WARN
    assert worst([Verdict.INCONCLUSIVE, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert worst([Verdict.SKIPPED, Verdict.PASS]) is Verdict.PASS

    def report(*verdicts: Verdict) -> Report:
        checks = tuple(CheckResult(f"c{i}", v, "s") for i, v in enumerate(verdicts))
        return Report("u", None, "m", "model", checks, 1.0)

    assert report(Verdict.PASS, Verdict.WARN, Verdict.INCONCLUSIVE, Verdict.SKIPPED).exit_code == 0
    assert report(Verdict.PASS, Verdict.FAIL).exit_code == 1


def test_budget_bounds_each_request_by_what_is_left() -> None:
    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0])
    assert budget.bound(30.0) == 10.0
    now[0] = 109.0
    assert budget.bound(30.0) == pytest.approx(1.0)
    now[0] = 109.8
    assert budget.exhausted
    assert budget.bound(30.0) == 0.5  # the least a request needs


# -- the command line ---------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamobs doctor")
    cli.add_arguments(p)
    return p


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(ttft=0.02, itl=0.02)) as simulator:
        yield simulator


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["ftp://127.0.0.1/v1"], {}, "scheme must be http or https"),
        (["http://user:pw@127.0.0.1:1"], {}, "credentials in the URL"),
        (["http://127.0.0.1:1", "--api-key-env", "STREAMOBS_TEST_NO_SUCH_VAR"], {}, "not set"),
        (["http://127.0.0.1:1", "--metrics", "127.0.0.1:1/metrics"], {}, "bad metrics URL"),
        (
            [
                "http://127.0.0.1:1/v1/completions",
                "--direct",
                "http://127.0.0.1:2/v1/chat/completions",
            ],
            {},
            "names the chat endpoint",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_two(
    argv: list[str],
    env: dict[str, str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.run(parser().parse_args(argv))
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamobs doctor: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["http://127.0.0.1:1", "--skip", "nonsense"],
        ["http://127.0.0.1:1", "--long-stream", "-5"],
        ["http://127.0.0.1:1", "--timeout", "soon"],
    ],
)
def test_bad_flag_values_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unreachable_server_exits_one_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(parser().parse_args([f"http://127.0.0.1:{closed_port()}"]))
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0]


def test_unreachable_server_in_json_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(parser().parse_args([f"http://127.0.0.1:{closed_port()}", "--json"]))
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["exit_code"] == 1 and "cannot connect" in document["error"]
    assert document["checks"] == []


def test_json_is_one_document_and_skips_are_honoured(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [sim.url, "--json", "--skip", "disconnect", "--skip", "long-stream"]

    def ask() -> tuple[int, dict[str, Any]]:
        code = cli.run(parser().parse_args(argv))
        return code, json.loads(capsys.readouterr().out)

    code, document = settled(ask, lambda answer: "inconclusive" in answer[1]["verdicts"].values())
    assert code == 0
    assert document["model"] == "sim-model"
    assert document["verdicts"] == {
        "buffering": "pass",
        "compression": "pass",
        "headers": "pass",
        "errors": "pass",
        "disconnect": "skipped",
        "long-stream": "skipped",
    }
    by_name = {check["name"]: check for check in document["checks"]}
    assert by_name["buffering"]["evidence"]["path"]["largest_burst"] == 1
    assert by_name["errors"]["evidence"]["bad_model"]["status"] == 404
    assert by_name["errors"]["evidence"]["over_long"]["status"] == 400
    assert document["metrics_url"] == sim.url + "/metrics"


def test_disconnect_without_metrics_is_inconclusive_not_failed(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    only = [f"--skip={name}" for name in ("buffering", "compression", "headers", "errors")]
    argv = [sim.url, "--metrics", f"http://127.0.0.1:{closed_port()}/metrics", *only]
    argv += ["--skip", "long-stream", "--json"]
    code = cli.run(parser().parse_args(argv))
    check = json.loads(capsys.readouterr().out)["checks"][4]
    assert code == 0
    assert check["name"] == "disconnect" and check["verdict"] == "inconclusive"
    assert "--metrics" in check["fix"]


def test_long_stream_beyond_the_context_length_is_inconclusive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    only = [f"--skip={name}" for name in ("compression", "headers", "errors", "disconnect")]
    config = SimulatorConfig(ttft=0.02, itl=0.005, max_model_len=256)
    with Simulator(config) as small:
        code = cli.run(parser().parse_args([small.url, "--long-stream", "5", "--json", *only]))
    check = json.loads(capsys.readouterr().out)["checks"][-1]
    assert code == 0
    assert check["name"] == "long-stream" and check["verdict"] == "inconclusive"
    assert "context of 256 tokens" in check["summary"]
    # The figure it falls short of is the one it needs (margin included), not the one asked.
    assert "a 5 s check needs with its margin" in check["summary"]


def test_text_output_shows_each_verdict_and_a_summary(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [sim.url, "--model", "sim-model", "--skip", "disconnect", "--skip", "long-stream"]

    def ask() -> tuple[int, str]:
        code = cli.run(parser().parse_args(argv))
        return code, capsys.readouterr().out

    # Asked again while inconclusive (the doctor read late on a loaded machine).
    code, out = settled(ask, lambda answer: "INCONCLUSIVE" in answer[1])
    assert code == 0, out
    assert "model   sim-model (context 4096 tokens)" in out
    for name in ("buffering", "compression", "headers", "errors"):
        assert f"PASS          {name}" in out
    assert "6 checks: 4 pass, 2 skipped" in out
