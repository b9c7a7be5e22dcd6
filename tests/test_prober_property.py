"""Whatever a server sends, split however it likes across writes, the probe ends with an
outcome of the enum, inside its deadline, in bounded memory, and never raises."""

from __future__ import annotations

import gzip
import socket
import time
import tracemalloc
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from tests.scripted_server import ScriptedServer

TIMEOUTS = Timeouts(connect=1, headers=1, first_token=1.5, total=2)
SLACK_NS = 500_000_000
MEMORY_BOUND = 20 << 20

_STATUS_LINES = [
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\n",
    b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 200\r\n",
    b"HTTP/1.1 99 Odd\r\n",
    b"ICY 200 OK\r\n",
    b"",
]
_HEADERS = [
    b"content-type: text/event-stream\r\n",
    b"content-type: application/json\r\n",
    b"transfer-encoding: chunked\r\n",
    b"content-length: 40\r\n",
    b"content-length: -1\r\n",
    b"content-encoding: gzip\r\n",
    b"content-encoding: br\r\n",
    b"x-junk: " + b"a" * 300 + b"\r\n",
    b"bad header line\r\n",
]
# Pieces of event streams, good and bad, from which bodies are assembled.
_PIECES = [
    b"data: ",
    b"event: error\n",
    b'{"choices":[{"delta":{"content":"hi"}}]}',
    b'{"choices":[{"delta":{"reasoning":"hm"},"finish_reason":null}]}',
    b'{"choices":[{"text":"x","finish_reason":"length"}]}',
    b'{"choices":[],"usage":{"completion_tokens":-5,"prompt_tokens":1e400}}',
    b'{"usage":{"completion_tokens":100000000000000000000000}}',
    b'{"error":{"message":"boom","type":"x"}}',
    b"[DONE]",
    b"[" * 3000,
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf",
    b": keep-alive",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    "\u2028".encode(),
    b"retry: 10\nid: 1\n",
    # Responses and Messages: typed events, terminal and failure events, odd payloads.
    b"event: response.output_text.delta\n",
    b'{"type":"response.output_text.delta","delta":"hi"}',
    b'{"type":"response.completed","response":{"usage":{"output_tokens":-1}}}',
    b'{"type":"response.incomplete","response":{"incomplete_details":{"reason":7}}}',
    b'{"type":"response.failed","response":{"error":[1]}}',
    b'{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"hm"}}',
    b'{"type":"content_block_delta","delta":"x"}',
    b'{"type":"message_delta","delta":null,"usage":{"output_tokens":1e400}}',
    b'{"type":"message_stop"}',
    b'{"type":"ping"}',
    b'{"type":["error"]}',
]


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = bytearray(), 0
    for size in sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        at += size
    if at < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - at, body[at:])
    return bytes(out + b"0\r\n\r\n")


@st.composite
def responses(draw: st.DrawFn) -> list[bytes]:
    """A whole response as the parts the server writes one after another."""
    if draw(st.booleans()):
        wire = draw(st.binary(max_size=2048))
    else:
        head = draw(st.sampled_from(_STATUS_LINES))
        head += b"".join(draw(st.lists(st.sampled_from(_HEADERS), max_size=4)))
        head += b"\r\n"
        body = b"".join(draw(st.lists(st.sampled_from(_PIECES), max_size=60)))
        framing = draw(st.sampled_from(["plain", "chunked", "gzip", "broken-chunks"]))
        if framing == "chunked":
            body = _chunked(body, draw(st.lists(st.integers(1, 64), max_size=20)))
        elif framing == "gzip":
            body = gzip.compress(body)
        elif framing == "broken-chunks":
            body = b"zz\r\n" + body
        wire = head + body
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    parts, last = [], 0
    for cut in [*cuts, len(wire)]:
        parts.append(wire[last:cut])
        last = cut
    return [p for p in parts if p]


class _Replay:
    """The current example's parts, written with a short pause so reads split too."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __call__(self, conn: socket.socket) -> None:
        for part in self.parts:
            conn.sendall(part)
            time.sleep(0.0005)
        conn.shutdown(socket.SHUT_WR)


REPLAY = _Replay()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    parts=responses(),
    endpoint=st.sampled_from(["chat", "completions", "responses", "messages"]),
)
def test_any_byte_stream_ends_as_an_outcome_in_time_and_memory(
    parts: list[bytes], endpoint: str
) -> None:
    REPLAY.parts = parts
    with ScriptedServer(REPLAY) as server:
        target = parse_target(server.url, endpoint)
        spec = ProbeSpec(target=target, model="m", timeouts=TIMEOUTS)
        tracemalloc.start()
        try:
            result = run_probe(spec)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(result.outcome, Outcome)
    assert result.end_ns <= TIMEOUTS.total * 1e9 + SLACK_NS
    assert peak < MEMORY_BOUND
    if result.output_tokens is not None:
        assert 0 <= result.output_tokens <= 10**9  # usage counts validated where they enter
    assert result.error is None or len(result.error) <= 500


def test_a_million_tiny_events_are_too_large_in_bounded_memory() -> None:
    # 1.6 M keep-alive-sized events once took 317 MB: the cap on events ends it early.
    event = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    body = zlib.compress(event * 200_000)

    def script(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: deflate\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )

    with ScriptedServer(script) as server:
        spec = ProbeSpec(
            target=parse_target(server.url),
            model="m",
            timeouts=Timeouts(total=20),
            max_events=50_000,
        )
        tracemalloc.start()
        try:
            result = run_probe(spec)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.outcome is Outcome.TOO_LARGE, result.error
    assert peak < MEMORY_BOUND
