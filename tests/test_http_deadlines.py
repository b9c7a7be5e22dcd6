"""Deadlines, not per-read timeouts: servers that drip, stall in 1xx, hang the resolver or
send a decompression bomb still end each exchange at its deadline, in bounded memory."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from streamobs.http import stamps
from streamobs.http.client import AddressInfo, Request, Resolver, Timeouts, fetch, system_resolver
from streamobs.http.errors import HTTPFailure, Kind, Phase
from streamobs.probe import Outcome, ProbeResult, ProbeSpec, parse_target, run_probe
from streamobs.probe import Timeouts as ProbeTimeouts
from streamobs.probe.models import ModelDiscoveryError, discover_model
from tests.scripted_server import SSE_HEADERS, Script, ScriptedServer, send, stream_fixture

TIMEOUTS = ProbeTimeouts(connect=1, headers=1.5, first_token=2, total=3)
SLACK_NS = 500_000_000  # an exchange ends within its deadline plus this


def drip(head: bytes, forever: bytes, every: float) -> Script:
    """Send ``head``, then one byte of ``forever`` (repeated) every ``every`` seconds."""

    def script(conn: socket.socket) -> None:
        conn.sendall(head)
        index = 0
        while True:
            time.sleep(every)
            conn.sendall(forever[index % len(forever) : index % len(forever) + 1])
            index += 1

    return script


def repeat(part: bytes, every: float) -> Script:
    def script(conn: socket.socket) -> None:
        while True:
            conn.sendall(part)
            time.sleep(every)

    return script


def probe(url: str, resolver: Resolver = system_resolver) -> ProbeResult:
    spec = ProbeSpec(target=parse_target(url), model="tiny", timeouts=TIMEOUTS, resolver=resolver)
    return run_probe(spec)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    stamps.keep_stamping_on()  # the one stamping socket a process keeps for good
    before = open_fds()
    yield
    deadline = time.monotonic() + 10
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # the scripted server's own sockets close as its threads end
    assert open_fds() <= before


@pytest.mark.parametrize(
    "name,script",
    [
        ("header byte drip", drip(b"HTTP/1.1 200 OK\r\nx-slow: ", b"a", 0.2)),
        ("status line drip", drip(b"", b"HTTP/1.1 200 OK", 0.3)),
        ("100 Continue forever", repeat(b"HTTP/1.1 100 Continue\r\n\r\n", 0.2)),
    ],
)
def test_a_server_dripping_its_head_ends_at_the_headers_deadline(
    name: str, script: Script, no_leaks: None
) -> None:
    with ScriptedServer(script) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.TIMEOUT_HEADERS, (name, result.error)
    sent = result.request_sent_ns
    assert sent is not None
    assert result.end_ns <= sent + TIMEOUTS.headers * 1e9 + SLACK_NS


def test_a_body_dripping_keepalives_ends_at_the_first_token_deadline(no_leaks: None) -> None:
    with ScriptedServer(drip(SSE_HEADERS, b"3\r\n:\n\n\r\n", 0.05)) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.TIMEOUT_FIRST_TOKEN, result.error
    assert result.end_ns <= TIMEOUTS.first_token * 1e9 + SLACK_NS


def test_interim_responses_are_skipped() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
    stream = stream_fixture("chat-stream-usage.sse")

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + hints)
        stream(conn)

    with ScriptedServer(script) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.OK, result.error
    assert result.http_status == 200


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/0.9 200 OK\r\n\r\n",
        b"hello there\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"\x16\x03\x01",
    ],
)
def test_a_broken_status_line_is_malformed(status_line: bytes) -> None:
    with ScriptedServer(send(status_line, then_close=True)) as server:
        result = probe(server.url)
    assert result.outcome is Outcome.MALFORMED, result.error


def test_a_resolver_that_never_answers_ends_at_the_connect_deadline(no_leaks: None) -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> AddressInfo:
        release.wait(60)
        raise OSError("released")

    try:
        result = probe("http://model.example.invalid:8000", resolver=hanging)
    finally:
        release.set()
    assert result.outcome is Outcome.CONNECT
    assert "name resolution timed out" in (result.error or "")
    assert result.end_ns <= TIMEOUTS.connect * 1e9 + SLACK_NS


def test_model_discovery_dripping_its_body_ends_at_its_deadline(no_leaks: None) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
    with ScriptedServer(drip(head, b'{"data": [', 0.1)) as server:
        started = time.perf_counter_ns()
        with pytest.raises(ModelDiscoveryError, match="did not answer within"):
            discover_model(parse_target(server.url), timeout=1.5)
        assert time.perf_counter_ns() - started <= 1.5e9 + SLACK_NS


def _bomb(size: int = 256 << 20) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    out = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join(out) + compressor.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb()


def _gzip_reply(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
        + b"\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )  # fmt: skip


def test_a_decompression_bomb_on_the_model_list_costs_bounded_memory(bomb: bytes) -> None:
    with ScriptedServer(send(_gzip_reply(b"200 OK", b"application/json", bomb))) as server:
        tracemalloc.start()
        try:
            with pytest.raises(ModelDiscoveryError, match="larger than"):
                discover_model(parse_target(server.url), timeout=10)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 20 << 20


def test_a_decompression_bomb_in_an_error_body_costs_bounded_memory(bomb: bytes) -> None:
    with ScriptedServer(send(_gzip_reply(b"404 Not Found", b"application/json", bomb))) as server:
        tracemalloc.start()
        try:
            result = probe(server.url)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.outcome is Outcome.HTTP_STATUS
    assert peak < 20 << 20


def test_fetch_reports_phase_and_kind() -> None:
    with (
        ScriptedServer(
            send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", then_close=True)
        ) as server,
        pytest.raises(HTTPFailure) as caught,
    ):
        fetch(Request("GET", server.url + "/x"), Timeouts(1, 1, 2), max_bytes=100)
    assert caught.value.phase is Phase.BODY and caught.value.kind is Kind.CLOSED


def test_gzip_bodies_decode(no_leaks: None) -> None:
    body = gzip.compress(b'{"data": [{"id": "m"}]}')
    with ScriptedServer(send(_gzip_reply(b"200 OK", b"application/json", body))) as server:
        assert discover_model(parse_target(server.url), timeout=5) == "m"


@pytest.mark.parametrize(
    "headers", [{"X-Test": "a\r\nX-Smuggled: yes"}, {"X-Test": "a\nb"}, {"X\r\nY": "v"}]
)
def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(
    headers: dict[str, str],
) -> None:
    reply = send(b"HTTP/1.1 204 No Content\r\n\r\n")
    with ScriptedServer(reply) as server, pytest.raises(HTTPFailure, match="line break"):
        fetch(Request("GET", server.url + "/", headers), Timeouts(1, 1, 2), max_bytes=10)
    assert not any(b"Smuggled" in r for r in server.requests)
