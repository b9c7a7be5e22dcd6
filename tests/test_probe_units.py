"""Pure pieces of the probe: target parsing, chunk meaning, delivery verdict, quantiles."""

from __future__ import annotations

import json

import pytest

from streamobs.probe.chunks import MalformedChunk, interpret
from streamobs.probe.delivery import analyse_delivery
from streamobs.probe.spec import ProbeSpec, TargetError, Timeouts, parse_target
from streamobs.stats import quantile
from tests.fixtures import FIXTURES

MS = 1_000_000


@pytest.mark.parametrize(
    "url,endpoint,request_url",
    [
        ("http://h:8000", None, "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "completions", "http://h:8000/v1/completions"),
        ("http://h:8000/v1", None, "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/completions", None, "http://h:8000/v1/completions"),
        ("https://gw/openai/v1/chat/completions/", None, "https://gw/openai/v1/chat/completions"),
        ("http://[::1]:8000", None, "http://[::1]:8000/v1/chat/completions"),
    ],
)
def test_parse_target(url: str, endpoint: str | None, request_url: str) -> None:
    target = parse_target(url, endpoint)
    assert target.request_url == request_url
    assert target.models_url.endswith("/v1/models")


def test_parse_target_port_and_host() -> None:
    target = parse_target("https://gw.example/v1")
    assert (target.host, target.port) == ("gw.example", 443)
    assert parse_target("http://h:9/v1").port == 9


@pytest.mark.parametrize(
    "url,endpoint",
    [
        ("h:8000", None),
        ("http://h:99999", None),
        ("http://h/v1/completions", "chat"),
        ("http://h?x=1", None),
        ("http://user:pw@h", None),
    ],
)
def test_parse_target_rejects(url: str, endpoint: str | None) -> None:
    with pytest.raises(TargetError):
        parse_target(url, endpoint)


def test_request_body_is_deterministic() -> None:
    spec = ProbeSpec(target=parse_target("http://h"), model="m", max_tokens=9)
    body = json.loads(spec.request_body())
    assert body["temperature"] == 0 and body["max_tokens"] == 9 and body["ignore_eos"]
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "user"
    plain = ProbeSpec(target=parse_target("http://h/v1/completions"), model="m", ignore_eos=False)
    body = json.loads(plain.request_body())
    assert "prompt" in body and "ignore_eos" not in body
    assert spec.request_body() == spec.request_body()


def test_bad_timeouts_and_specs_are_rejected() -> None:
    with pytest.raises(TargetError):
        Timeouts(total=0)
    with pytest.raises(TargetError):
        Timeouts(connect=float("nan"))
    with pytest.raises(TargetError):
        ProbeSpec(target=parse_target("http://h"), model="")


def test_interpret_real_capture_chunks() -> None:
    lines = (FIXTURES / "chat-stream-usage.sse").read_text().splitlines()
    chunks = [interpret(line[6:]) for line in lines if line.startswith("data: ")]
    assert chunks[0].has_token is False  # role-only
    assert chunks[-1].done
    usage = chunks[-2]
    assert (usage.completion_tokens, usage.prompt_tokens, usage.has_token) == (16, 15, False)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]


@pytest.mark.parametrize(
    "payload,token,answer",
    [
        ('{"choices":[{"delta":{"content":""}}]}', False, False),
        ('{"choices":[{"delta":{"content":null}}]}', False, False),
        ('{"choices":[{"delta":{"reasoning_content":"hm"}}]}', True, False),
        ('{"choices":[{"delta":{"reasoning":"hm"}}]}', True, False),
        ('{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}', True, True),
        ('{"choices":[{"delta":{"tool_calls":[]}}]}', False, False),
        ('{"choices":[{"text":"a"}]}', True, True),
        ('{"choices":[{"text":""}]}', False, False),
        ('{"choices":[]}', False, False),
    ],
)
def test_what_counts_as_a_token(payload: str, token: bool, answer: bool) -> None:
    chunk = interpret(payload)
    assert (chunk.has_token, chunk.has_answer) == (token, answer)


def test_error_payloads() -> None:
    chunk = interpret((FIXTURES / "chat-stream-engine-dead.sse").read_text().split("\n")[0][6:])
    assert chunk.error is not None and chunk.error.startswith("InternalServerError: EngineCore")
    assert interpret('{"error": "boom"}').error == "boom"
    for bad in ("{not json", "[1, 2]", '"x"', '{"choices": 3}', '{"choices": [1]}'):
        with pytest.raises(MalformedChunk):
            interpret(bad)


def test_delivery_one_token_per_read_is_healthy() -> None:
    arrivals = [i * 20 * MS for i in range(10)]
    d = analyse_delivery(12, [1] * 12, arrivals, list(range(10)))
    assert (d.largest_burst, d.burst_share, d.buffered) == (1, 0.0, False)
    assert d.events_per_read == 1.0


def test_delivery_all_in_one_read_is_buffered() -> None:
    d = analyse_delivery(1, [12], [5 * MS] * 10, [0] * 10)
    assert (d.largest_burst, d.burst_share, d.buffered) == (10, 1.0, True)


def test_delivery_back_to_back_reads_count_as_one_burst() -> None:
    # A proxy flushing its buffer as many small chunks: separate reads, microseconds apart.
    arrivals = [100 * MS + i * 1000 for i in range(8)]
    d = analyse_delivery(8, [1] * 8, arrivals, list(range(8)))
    assert d.largest_burst == 8 and d.buffered


def test_delivery_too_few_tokens_is_no_verdict() -> None:
    d = analyse_delivery(1, [3], [MS] * 3, [0] * 3)
    assert d.largest_burst == 3 and not d.buffered


def test_delivery_occasional_pairs_are_not_buffered() -> None:
    arrivals, reads = [], []
    for i in range(10):
        arrivals.append(i * 20 * MS)
        reads.append(i if i % 5 else i - 1)  # two of ten tokens coalesced with a neighbour
    d = analyse_delivery(10, [1] * 10, arrivals, reads)
    assert d.largest_burst == 2 and d.burst_share < 0.5 and not d.buffered


def test_quantile_matches_numpy_linear() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([10], 0.99) == 10
    assert quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == pytest.approx(9.1)
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_kernel_stamps_never_go_backwards_and_bound_their_spread() -> None:
    import select
    import socket
    import sys
    import time

    from streamobs.http.channel import PlainChannel
    from streamobs.http.errors import Deadline, Phase

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    channel = PlainChannel(client)
    try:
        created = time.perf_counter_ns()
        stamps = []
        for part in (b"one", b"two", b"three"):
            peer.sendall(part)
            select.select([client], [], [], 5)  # queued before the read: the spread says so
            data, stamp = channel.recv(1024, Deadline(5, Phase.BODY))
            assert data == part
            stamps.append(stamp)
        assert [s.arrival_ns for s in stamps] == sorted(s.arrival_ns for s in stamps)
        for stamp in stamps:
            assert created <= stamp.arrival_ns <= time.perf_counter_ns()
            assert stamp.spread_ns >= 0 and stamp.lateness_ns >= 0
            assert stamp.tail_exact  # each read took all there was
            assert stamp.kernel or sys.platform != "linux"
        peer.sendall(b"x" * 100)
        select.select([client], [], [], 5)
        _data, cut = channel.recv(10, Deadline(5, Phase.BODY))
        assert not cut.tail_exact  # the read left bytes behind: its stamp is not theirs
    finally:
        channel.close()
        peer.close()
        server.close()


def test_a_late_read_vouches_for_a_burst_only_when_the_kernel_saw_it_bundled() -> None:
    from streamobs.http.channel import ReadStamp
    from streamobs.probe.timing import EventStamps

    def late_read(segments: int | None) -> frozenset[int]:
        # Ten tokens in one read after the reader waited 100 ms for a CPU: alone, that
        # says nothing; the number of TCP segments that carried them does.
        stamps = EventStamps()
        stamp = ReadStamp(1_000, 100_000_000, True, 100_000_000, kernel=True, segments=segments)
        stamps.read_with_events(10, stamp, exact_tail=True)
        for index in range(10):
            stamps.token(1_000, last=index == 9)
        return stamps.vouched_reads()

    assert late_read(1) == {1}  # ten tokens in one segment: sent together
    assert late_read(10) == frozenset()  # one segment each: the reader's lateness
    assert late_read(None) == frozenset()  # unknown: no verdict from it
