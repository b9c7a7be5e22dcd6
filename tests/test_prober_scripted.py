"""The prober against exact bytes: the real vLLM captures and hand-made failures."""

from __future__ import annotations

import json
import socket
import time

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.probe.result import ProbeResult
from tests.fixtures import FIXTURES
from tests.scripted_server import (
    SSE_HEADERS,
    ScriptedServer,
    chunk,
    fixture_response,
    send,
    silent,
    stream_fixture,
)


def count_text_chunks(name: str) -> int:
    """Events whose delta.content or text is non-empty, straight from the capture."""
    count = 0
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                if (choice.get("delta") or {}).get("content") or choice.get("text"):
                    count += 1
    return count


def probe(url: str, endpoint: str = "chat", **kwargs: object) -> ProbeResult:
    timeouts = kwargs.pop("timeouts", Timeouts(connect=2, headers=2, first_token=3, total=5))
    spec = ProbeSpec(
        target=parse_target(url, endpoint),
        model="tiny",
        timeouts=timeouts,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return run_probe(spec)


def test_real_vllm_chat_capture_is_ok_with_usage_tokens() -> None:
    with ScriptedServer(stream_fixture("chat-stream-usage.sse", delay=0.01)) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.OK, result.error
    assert result.output_tokens == 16
    assert result.output_tokens_source == "usage"
    assert result.prompt_tokens == 15
    assert result.finish_reason == "length"
    assert result.response_model == "tiny"
    assert result.response_id == "chatcmpl-bb5dce640bfe8788"
    # Role-only and empty-content chunks are events but not tokens.
    assert result.first_event_ns is not None and result.first_token_ns is not None
    assert result.first_event_ns < result.first_token_ns
    text_chunks = count_text_chunks("chat-stream-usage.sse")
    assert 0 < text_chunks < 16
    assert result.content_events == text_chunks
    assert len(result.itl_ns) == text_chunks - 1
    assert result.delivery is not None and not result.delivery.buffered
    # The usage chunk after the last token never moves last_token.
    assert result.done_ns is not None and result.last_token_ns is not None
    assert result.done_ns - result.last_token_ns >= 15_000_000
    assert result.tpot_ns == pytest.approx((result.last_token_ns - result.first_token_ns) / 15)
    body = json.loads(server.requests[0].split(b"\r\n\r\n", 1)[1])
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["ignore_eos"] is True


def test_real_vllm_completions_capture_counts_events_without_usage() -> None:
    with ScriptedServer(stream_fixture("completions-stream.sse")) as server:
        result = probe(server.url, endpoint="completions")
    assert result.outcome is Outcome.OK
    assert result.output_tokens_source == "events"
    assert result.output_tokens == result.content_events > 0
    assert server.requests[0].startswith(b"POST /v1/completions ")


def test_engine_dead_stream_is_stream_error_not_ok() -> None:
    with ScriptedServer(stream_fixture("chat-stream-engine-dead.sse")) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.STREAM_ERROR
    assert result.http_status == 200
    assert result.error is not None and "EngineCore encountered an issue" in result.error


@pytest.mark.parametrize("name,status", [("chat-bad-model", 404), ("chat-too-long", 400)])
def test_http_errors_keep_status_and_message(name: str, status: int) -> None:
    with ScriptedServer(send(fixture_response(name))) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.HTTP_STATUS
    assert result.http_status == status
    assert result.events == 0 and result.delivery is None
    expected = json.loads(fixture_response(name).split(b"\r\n\r\n", 1)[1])["error"]["message"]
    assert result.error is not None and expected[:40] in result.error


def test_200_json_is_not_sse() -> None:
    body = b'{"choices":[]}'
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    with ScriptedServer(send(reply % (len(body), body))) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.NOT_SSE


def test_eof_without_done_or_finish_reason_is_truncated() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    with ScriptedServer(send(SSE_HEADERS, chunk(event) * 3, b"0\r\n\r\n")) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.TRUNCATED
    assert result.content_events == 3


def test_connection_reset_mid_chunk_is_truncated() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    with ScriptedServer(
        send(SSE_HEADERS, chunk(event), b"40\r\ndata: {", then_close=True)
    ) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.TRUNCATED


def test_eof_after_finish_reason_without_done_is_ok() -> None:
    events = [
        b'data: {"choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"text":"b","finish_reason":"stop"}]}\n\n',
    ]
    with ScriptedServer(send(SSE_HEADERS, *map(chunk, events), b"0\r\n\r\n")) as server:
        result = probe(server.url, endpoint="completions")
    assert result.outcome is Outcome.OK
    assert result.finish_reason == "stop"


def test_done_without_content_is_empty() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    with ScriptedServer(send(SSE_HEADERS, *map(chunk, events))) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.EMPTY
    assert result.first_event_ns is not None and result.first_token_ns is None


def test_bad_json_is_malformed() -> None:
    with ScriptedServer(send(SSE_HEADERS, chunk(b"data: {not json\n\n"))) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.MALFORMED


def test_reasoning_counts_for_ttft_and_answer_is_separate() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"answer"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    with ScriptedServer(send(SSE_HEADERS, *map(chunk, events), delay=0.05)) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.OK
    assert result.first_token_ns is not None and result.first_answer_ns is not None
    assert result.first_answer_ns - result.first_token_ns >= 40_000_000


def test_tool_call_delta_is_a_token() -> None:
    tool = b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}'
    with ScriptedServer(
        send(SSE_HEADERS, chunk(b"data: " + tool + b"\n\n"), chunk(b"data: [DONE]\n\n"))
    ) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.OK and result.content_events == 1


def test_server_that_never_answers_hits_the_header_timeout() -> None:
    with ScriptedServer(silent) as server:
        started = time.monotonic()
        result = probe(server.url, timeouts=Timeouts(connect=1, headers=0.5, total=5))
        elapsed = time.monotonic() - started
        assert server.closed_by_client.wait(5), "the probe left the connection open"
    assert result.outcome is Outcome.TIMEOUT_HEADERS
    assert 0.4 < elapsed < 2.5


def test_headers_then_silence_is_timeout_first_token_and_connection_closed() -> None:
    with ScriptedServer(send(SSE_HEADERS)) as server:
        result = probe(
            server.url, timeouts=Timeouts(connect=1, headers=1, first_token=0.5, total=5)
        )
        assert server.closed_by_client.wait(5), "the probe left the connection open"
    assert result.outcome is Outcome.TIMEOUT_FIRST_TOKEN
    assert result.end_ns == pytest.approx(0.5e9, abs=0.3e9)


def test_keepalive_trickle_cannot_extend_the_total_deadline() -> None:
    first = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    pings = [chunk(b": ping\n\n")] * 40
    with ScriptedServer(send(SSE_HEADERS, chunk(first), *pings, delay=0.05)) as server:
        result = probe(server.url, timeouts=Timeouts(connect=1, headers=1, first_token=1, total=1))
        assert server.closed_by_client.wait(5)
    assert result.outcome is Outcome.TIMEOUT_TOTAL
    assert result.keepalives > 5
    assert result.end_ns < 1.3e9


def test_connection_refused_is_connect() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = probe(f"http://127.0.0.1:{port}")
    assert result.outcome is Outcome.CONNECT
    assert result.error is not None and "refused" in result.error.lower()


def test_tls_to_a_plain_http_server_is_tls() -> None:
    reply = send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with ScriptedServer(reply, read_request=False) as server:
        result = probe(server.url.replace("http://", "https://"))
    assert result.outcome is Outcome.TLS
