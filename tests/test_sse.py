"""The SSE decoder against the real vLLM captures, split every way a socket can split them."""

from __future__ import annotations

import json
import random

import pytest

from streamobs.probe.chunks import interpret
from streamobs.sse import SSEDecoder, SSEEvent, SSETooLarge
from tests.fixtures import FIXTURES

STREAMS = ["chat-stream-usage.sse", "completions-stream.sse", "chat-stream-engine-dead.sse"]
# Typed `event:`/`data:` pairs, no [DONE]: Responses and Anthropic Messages.
TYPED_STREAMS = {
    "responses-stream.sse": "response.completed",
    "messages-stream.sse": "message_stop",
}


def decode(chunks: list[bytes], decoder: SSEDecoder | None = None) -> list[SSEEvent]:
    decoder = decoder or SSEDecoder()
    events: list[SSEEvent] = []
    for index, chunk in enumerate(chunks):
        events.extend(decoder.feed(chunk, index))
    return events


def payloads(events: list[SSEEvent]) -> list[tuple[str, str]]:
    return [(e.event, e.data) for e in events]


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def reframe(data: bytes, newline: bytes) -> bytes:
    return data.replace(b"\n", newline)


@pytest.fixture(params=[*STREAMS, *TYPED_STREAMS])
def capture(request: pytest.FixtureRequest) -> bytes:
    return (FIXTURES / request.param).read_bytes()


@pytest.mark.parametrize("name", STREAMS)
def test_whole_capture_gives_one_event_per_data_line(name: str) -> None:
    capture = (FIXTURES / name).read_bytes()
    events = decode([capture])
    data_lines = [line for line in capture.split(b"\n") if line.startswith(b"data:")]
    assert len(events) == len(data_lines) >= 2
    assert events[-1].data == "[DONE]"
    assert all(e.event == "message" for e in events)


@pytest.mark.parametrize(("name", "terminal"), TYPED_STREAMS.items())
def test_typed_capture_gives_one_named_event_per_pair(name: str, terminal: str) -> None:
    capture = (FIXTURES / name).read_bytes()
    events = decode([capture])
    event_lines = [line for line in capture.split(b"\n") if line.startswith(b"event:")]
    assert len(events) == len(event_lines) >= 10
    # Each event keeps the name of its own `event:` line, the same as its payload's type.
    assert all(e.event == json.loads(e.data)["type"] for e in events)
    assert events[-1].event == terminal
    assert all(e.data != "[DONE]" for e in events)


def test_every_split_gives_identical_events(capture: bytes) -> None:
    expected = payloads(decode([capture]))
    for size in (1, 2, 3, 7, 64, 4096):
        assert payloads(decode(split_every(capture, size))) == expected, size
    for cut in range(len(capture) + 1):
        assert payloads(decode([capture[:cut], capture[cut:]])) == expected, cut
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(capture)), 12))
        parts = [capture[a:b] for a, b in zip([0, *cuts], [*cuts, len(capture)], strict=True)]
        assert payloads(decode(parts)) == expected


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_lf_cr_and_crlf_framings_are_equivalent(capture: bytes, newline: bytes) -> None:
    expected = payloads(decode([capture]))
    framed = reframe(capture, newline)
    assert payloads(decode([framed])) == expected
    assert payloads(decode(split_every(framed, 1))) == expected


def test_crlf_pair_split_across_reads_is_one_line_break() -> None:
    events = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert payloads(events) == [("message", "a\nb")]


def test_lone_cr_at_end_of_read_then_data_is_a_break() -> None:
    events = decode([b"data: a\r", b"\r", b"data: b\r\r"])
    assert payloads(events) == [("message", "a"), ("message", "b")]


def test_events_carry_the_stamp_of_the_read_that_completed_them() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":', 100) == []
    assert decoder.feed(b" 1}\n", 200) == []
    (event,) = decoder.feed(b"\n", 300)
    assert event.received_ns == 300
    assert event.data == '{"a": 1}'


def test_comments_are_counted_and_never_events() -> None:
    decoder = SSEDecoder()
    events = decode([b": keep-alive\n\n" * 5, b":\n\ndata: x\n\n"], decoder)
    assert payloads(events) == [("message", "x")]
    assert decoder.comments == 6
    assert decoder.last_comment_ns == 1


def test_multiline_data_joins_with_lf_and_field_rules() -> None:
    stream = b"event: update\ndata: one\ndata:two\ndata\nid: 7\nretry: 10\nfoo: bar\n\n"
    assert payloads(decode([stream])) == [("update", "one\ntwo\n")]


def test_id_and_retry_alone_dispatch_nothing() -> None:
    assert decode([b"id: 1\nretry: 5000\n\nevent: x\n\n"]) == []


def test_bom_is_stripped_once_even_split() -> None:
    bom = b"\xef\xbb\xbf"
    assert payloads(decode([bom + b"data: a\n\n"])) == [("message", "a")]
    assert payloads(decode([bom[:1], bom[1:2], bom[2:] + b"data: a\n\n"])) == [("message", "a")]
    # A second BOM is data of the field name, so the line is an unknown field.
    assert decode([bom + bom + b"data: a\n\n"]) == []


def test_short_stream_that_only_looks_like_a_bom_prefix() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef", 1) == []
    assert decoder.has_pending
    assert payloads(decoder.feed(b"data: z\n\n", 2)) == []  # \xef + "data" is not "data"


def test_line_separator_inside_json_does_not_split() -> None:
    payload = '{"choices":[{"delta":{"content":"a\u2028b\u2029c\x85d"}}]}'
    stream = b"data: " + payload.encode() + b"\n\n"
    for size in (1, 5, len(stream)):
        (event,) = decode(split_every(stream, size))
        assert event.data == payload
        assert interpret(event.data).has_token


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (event,) = decode([b'data: {"text":"\xff\xfe"}\n\n'])
    assert event.data == '{"text":"\ufffd\ufffd"}'


def test_line_over_the_bound_raises_without_buffering_it() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    decoder.feed(b"data: " + b"x" * 900, 1)
    with pytest.raises(SSETooLarge):
        decoder.feed(b"x" * 200, 2)
    assert len(decoder._line) <= 1000


def test_event_over_the_bound_raises() -> None:
    decoder = SSEDecoder(max_line_bytes=100, max_event_bytes=250)
    with pytest.raises(SSETooLarge):
        decoder.feed(b"data: " + b"y" * 90 + b"\n" + (b"data: " + b"y" * 90 + b"\n") * 2, 1)


def test_pending_tracks_incomplete_event() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: partial", 1)
    assert decoder.has_pending
    decoder.feed(b"\n", 2)
    assert decoder.has_pending
    decoder.feed(b"\n", 3)
    assert not decoder.has_pending


def test_keepalives_never_count_as_tokens_in_the_capture() -> None:
    capture = (FIXTURES / "chat-stream-usage.sse").read_bytes()
    noisy = capture.replace(b"\n\n", b"\n\n: ping\n\n")
    decoder = SSEDecoder()
    events = decode(split_every(noisy, 3), decoder)
    assert payloads(events) == payloads(decode([capture]))
    assert decoder.comments == capture.count(b"\n\n")
