"""Responses and Anthropic Messages: the real vLLM captures through the prober, each
protocol's request shape, and every terminal, failure and output rule on exact bytes."""

from __future__ import annotations

import json

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.probe.anthropic_messages import interpret_messages
from streamobs.probe.chunks import MalformedChunk, interpret
from streamobs.probe.openai_responses import interpret_responses
from streamobs.probe.result import ProbeResult
from streamobs.secret import Secret
from tests.scripted_server import (
    SSE_HEADERS,
    ScriptedServer,
    chunk,
    fixture_response,
    send,
    stream_fixture,
)

TIMEOUTS = Timeouts(connect=2, headers=2, first_token=3, total=5)


def probe(url: str, endpoint: str, **kwargs: object) -> ProbeResult:
    spec = ProbeSpec(
        target=parse_target(url, endpoint),
        model="tiny",
        timeouts=TIMEOUTS,
        **kwargs,  # type: ignore[arg-type]
    )
    return run_probe(spec)


def typed(kind: str, obj: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps({"type": kind, **obj}).encode()


def serve_events(*events: bytes, end: bool = True) -> ScriptedServer:
    parts = [SSE_HEADERS, *(chunk(e + b"\n\n") for e in events)]
    if end:
        parts.append(b"0\r\n\r\n")
    return ScriptedServer(send(*parts, then_close=end))


def request_of(server: ScriptedServer) -> tuple[bytes, dict[str, object]]:
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    return head, json.loads(body)


# --- the real captures ---------------------------------------------------------------


def test_responses_capture_is_ok_with_16_tokens_from_usage() -> None:
    with ScriptedServer(stream_fixture("responses-stream.sse", delay=0.005)) as server:
        result = probe(server.url, "responses", max_tokens=16)
    assert result.outcome is Outcome.OK, result.error
    assert result.endpoint == "responses"
    assert (result.output_tokens, result.output_tokens_source) == (16, "usage")
    assert result.prompt_tokens == 32 and result.reasoning_tokens == 0
    assert result.content_events == 9  # nine output_text deltas carried the 16 tokens
    assert result.events == 17 and result.reasoning_events == result.tool_call_events == 0
    assert result.response_id == "resp_a5cdabb2aab06929" and result.response_model == "tiny"
    # vLLM ends a capped response with response.completed, status incomplete: the limit.
    assert result.finish_reason == "max_output_tokens"
    # Four lifecycle events come before the first delta; three more before the end.
    assert result.first_event_ns is not None and result.first_token_ns is not None
    assert result.first_event_ns < result.first_token_ns
    assert result.first_answer_ns == result.first_token_ns
    assert result.done_ns is not None and result.last_token_ns is not None
    assert result.done_ns > result.last_token_ns
    assert result.tpot_ns == pytest.approx((result.last_token_ns - result.first_token_ns) / 15)
    head, body = request_of(server)
    assert head.startswith(b"POST /v1/responses ")
    assert body["max_output_tokens"] == 16 and "max_tokens" not in body
    assert body["input"] and body["stream"] is True and "stream_options" not in body


def test_messages_capture_is_ok_with_16_tokens_from_usage() -> None:
    with ScriptedServer(stream_fixture("messages-stream.sse", delay=0.005)) as server:
        result = probe(server.url + "/v1/messages", "messages", max_tokens=16)
    assert result.outcome is Outcome.OK, result.error
    assert result.endpoint == "messages"
    assert (result.output_tokens, result.output_tokens_source) == (16, "usage")
    assert result.prompt_tokens == 32
    assert result.content_events == 12 and result.events == 17
    assert result.finish_reason == "max_tokens"  # the stop_reason
    assert result.response_id == "chatcmpl-8467e8ada5da2281" and result.response_model == "tiny"
    assert result.first_event_ns is not None and result.first_token_ns is not None
    assert result.first_event_ns < result.first_token_ns
    assert result.done_ns is not None and result.last_token_ns is not None
    assert result.done_ns > result.last_token_ns
    head, body = request_of(server)
    assert head.startswith(b"POST /v1/messages ")
    assert body["max_tokens"] == 16 and body["messages"] and "stream_options" not in body


@pytest.mark.parametrize(
    ("name", "endpoint", "status"),
    [
        ("responses-bad-model", "responses", 404),
        ("responses-too-long", "responses", 400),
        ("messages-bad-model", "messages", 404),
        ("messages-too-long", "messages", 400),
    ],
)
def test_error_replies_are_http_status_with_the_message(
    name: str, endpoint: str, status: int
) -> None:
    reply = fixture_response(name)
    with ScriptedServer(send(reply)) as server:
        result = probe(server.url, endpoint)
    assert result.outcome is Outcome.HTTP_STATUS and result.http_status == status
    assert result.events == 0
    message = json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["message"]
    assert result.error is not None and message in result.error


# --- request shapes --------------------------------------------------------------------


def test_messages_request_carries_the_anthropic_headers_and_key() -> None:
    with ScriptedServer(stream_fixture("messages-stream.sse")) as server:
        result = probe(server.url, "messages", api_key=Secret("sk-test-123"))
    assert result.outcome is Outcome.OK
    head = request_of(server)[0].decode().lower()
    assert "\r\nx-api-key: sk-test-123\r\n" in head
    assert "\r\nanthropic-version: 2023-06-01\r\n" in head


@pytest.mark.parametrize(
    ("url", "endpoint", "path"),
    [
        ("http://h/v1/responses", None, "/v1/responses"),
        ("http://h/v1/messages/", None, "/v1/messages"),
        ("http://h/v1", "responses", "/v1/responses"),
        ("http://h", "messages", "/v1/messages"),
        ("http://h/v1", None, "/v1/chat/completions"),
    ],
)
def test_endpoint_from_the_path_or_the_setting(url: str, endpoint: str | None, path: str) -> None:
    assert parse_target(url, endpoint).request_url == "http://h" + path


def test_endpoint_mismatch_and_unknown_kind_are_refused() -> None:
    from streamobs.probe import TargetError

    with pytest.raises(TargetError, match="names the messages endpoint"):
        parse_target("http://h/v1/messages", "responses")
    with pytest.raises(TargetError, match="chat, completions, responses, messages"):
        parse_target("http://h/v1", "embeddings")


@pytest.mark.parametrize(
    ("endpoint", "tools_key", "choice"),
    [
        ("chat", "function", {"type": "function", "function": {"name": "record_numbers"}}),
        ("responses", "parameters", {"type": "function", "name": "record_numbers"}),
        ("messages", "input_schema", {"type": "tool", "name": "record_numbers"}),
    ],
)
def test_tool_call_option_forces_one_fixed_function(
    endpoint: str, tools_key: str, choice: dict[str, object]
) -> None:
    spec = ProbeSpec(target=parse_target("http://h", endpoint), model="m", tool_call=True)
    body = json.loads(spec.request_body())
    (tool,) = body["tools"]
    assert tools_key in tool and body["tool_choice"] == choice
    plain = ProbeSpec(target=parse_target("http://h", endpoint), model="m")
    assert "tools" not in json.loads(plain.request_body())


def test_tool_call_on_completions_is_refused() -> None:
    from streamobs.probe import TargetError

    with pytest.raises(TargetError, match="no tool calls"):
        ProbeSpec(target=parse_target("http://h/v1/completions"), model="m", tool_call=True)


# --- what counts, what ends, what fails ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "delta", "token", "answer", "reasoning", "tool"),
    [
        ("response.output_text.delta", "hi", True, True, False, False),
        ("response.output_text.delta", "", False, False, False, False),
        ("response.reasoning_text.delta", "hm", True, False, True, False),
        ("response.function_call_arguments.delta", '{"a', True, True, False, True),
        ("response.output_text.done", "hi", False, False, False, False),
        ("response.in_progress", "x", False, False, False, False),
    ],
)
def test_responses_output_rules(
    kind: str, delta: str, token: bool, answer: bool, reasoning: bool, tool: bool
) -> None:
    chunk = interpret_responses(kind, json.dumps({"type": kind, "delta": delta}))
    assert (chunk.has_token, chunk.has_answer, chunk.has_reasoning, chunk.has_tool_call) == (
        token,
        answer,
        reasoning,
        tool,
    )


@pytest.mark.parametrize(
    ("delta", "token", "answer", "reasoning", "tool"),
    [
        ({"type": "text_delta", "text": "hi"}, True, True, False, False),
        ({"type": "text_delta", "text": ""}, False, False, False, False),
        ({"type": "thinking_delta", "thinking": "hm"}, True, False, True, False),
        ({"type": "input_json_delta", "partial_json": '{"n'}, True, True, False, True),
        ({"type": "signature_delta", "signature": "abc"}, False, False, False, False),
    ],
)
def test_messages_output_rules(
    delta: dict[str, str], token: bool, answer: bool, reasoning: bool, tool: bool
) -> None:
    data = json.dumps({"type": "content_block_delta", "index": 0, "delta": delta})
    chunk = interpret_messages("content_block_delta", data)
    assert (chunk.has_token, chunk.has_answer, chunk.has_reasoning, chunk.has_tool_call) == (
        token,
        answer,
        reasoning,
        tool,
    )


def test_chat_reasoning_from_either_field_and_usage_details() -> None:
    for field in ("reasoning", "reasoning_content"):
        chunk = interpret(json.dumps({"choices": [{"delta": {field: "hm"}}]}))
        assert chunk.has_reasoning and chunk.has_token and not chunk.has_answer
    usage = {"completion_tokens": 9, "completion_tokens_details": {"reasoning_tokens": 4}}
    assert interpret(json.dumps({"choices": [], "usage": usage})).reasoning_tokens == 4


def test_typed_payload_that_is_not_an_object_is_malformed() -> None:
    for parse in (interpret_responses, interpret_messages):
        with pytest.raises(MalformedChunk):
            parse("x", "[DONE]")
        with pytest.raises(MalformedChunk):
            parse("x", "[1]")


def messages_start() -> list[bytes]:
    message = {"id": "msg_1", "model": "tiny", "usage": {"input_tokens": 5, "output_tokens": 0}}
    return [
        typed("message_start", {"message": message}),
        typed("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]


def text_delta(text: str) -> bytes:
    return typed("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})


def messages_end(tokens: int) -> list[bytes]:
    return [
        typed("content_block_stop", {"index": 0}),
        typed(
            "message_delta",
            {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": tokens}},
        ),
        typed("message_stop", {}),
    ]


def test_messages_ping_never_counts() -> None:
    events = [
        *messages_start()[:1],
        typed("ping", {}),
        *messages_start()[1:],
        typed("ping", {}),
        text_delta("a"),
        typed("ping", {}),
        text_delta("b"),
        *messages_end(2),
    ]
    with serve_events(*events) as server:
        result = probe(server.url, "messages")
    assert result.outcome is Outcome.OK, result.error
    assert result.content_events == 2 and result.output_tokens == 2
    assert result.finish_reason == "end_turn"


def test_messages_overloaded_error_event_is_stream_error() -> None:
    error = typed("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    with serve_events(*messages_start(), text_delta("a"), error) as server:
        result = probe(server.url, "messages")
    assert result.outcome is Outcome.STREAM_ERROR
    assert result.error is not None and "overloaded_error: Overloaded" in result.error


def test_messages_without_message_stop_is_truncated_even_after_stop_reason() -> None:
    with serve_events(*messages_start(), text_delta("a"), *messages_end(1)[:2]) as server:
        result = probe(server.url, "messages")
    assert result.outcome is Outcome.TRUNCATED
    assert result.error is not None and "message_stop" in result.error


def test_messages_thinking_then_tool_call_timed_apart() -> None:
    thinking = {"type": "thinking_delta", "thinking": "let me see"}
    tool = {"type": "input_json_delta", "partial_json": '{"numbers": "one"}'}
    events = [
        messages_start()[0],
        typed("content_block_delta", {"index": 0, "delta": thinking}),
        typed("content_block_delta", {"index": 0, "delta": thinking}),
        typed("content_block_delta", {"index": 1, "delta": tool}),
        *messages_end(3),
    ]
    parts = [SSE_HEADERS, *(chunk(e + b"\n\n") for e in events), b"0\r\n\r\n"]
    with ScriptedServer(send(*parts, delay=0.02, then_close=True)) as server:
        result = probe(server.url, "messages")
    assert result.outcome is Outcome.OK, result.error
    assert (result.content_events, result.reasoning_events, result.tool_call_events) == (3, 2, 1)
    assert result.first_token_ns is not None and result.first_answer_ns is not None
    assert result.first_answer_ns == result.first_tool_call_ns
    assert result.first_answer_ns > result.first_token_ns


def responses_start() -> list[bytes]:
    response = {"id": "resp_1", "model": "tiny", "status": "in_progress", "usage": None}
    return [typed("response.created", {"response": response, "sequence_number": 0})]


def output_delta(text: str, kind: str = "response.output_text.delta") -> bytes:
    return typed(kind, {"delta": text, "item_id": "msg_1", "output_index": 0})


def responses_end(kind: str, **response: object) -> bytes:
    usage = {"input_tokens": 5, "output_tokens": 2, "output_tokens_details": {}}
    body = {"id": "resp_1", "model": "tiny", "usage": usage, **response}
    return typed(kind, {"response": body})


def test_responses_completed_is_the_end_and_carries_usage() -> None:
    end = responses_end("response.completed", status="completed", incomplete_details=None)
    with serve_events(*responses_start(), output_delta("a"), output_delta("b"), end) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.OK, result.error
    assert (result.output_tokens, result.output_tokens_source) == (2, "usage")
    assert result.finish_reason == "completed"


def test_responses_incomplete_at_the_output_limit_is_the_normal_end() -> None:
    end = responses_end(
        "response.incomplete",
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    with serve_events(*responses_start(), output_delta("a"), output_delta("b"), end) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.OK, result.error
    assert result.finish_reason == "max_output_tokens"


def test_responses_incomplete_for_another_reason_is_truncated_and_says_why() -> None:
    end = responses_end(
        "response.incomplete", status="incomplete", incomplete_details={"reason": "content_filter"}
    )
    with serve_events(*responses_start(), output_delta("a"), end) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.TRUNCATED
    assert result.error == "response.incomplete: content_filter"
    assert result.output_tokens == 2  # the usage it carried is still recorded


def test_responses_failed_is_stream_error_with_the_reason() -> None:
    error = {"code": "server_error", "message": "the engine died"}
    end = responses_end("response.failed", status="failed", error=error)
    with serve_events(*responses_start(), output_delta("a"), end) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.STREAM_ERROR
    assert result.error is not None and "server_error: the engine died" in result.error


def test_responses_error_event_is_stream_error() -> None:
    error = typed("error", {"code": "rate_limit_exceeded", "message": "slow down", "param": None})
    with serve_events(*responses_start(), error) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.STREAM_ERROR
    assert result.error is not None and "rate_limit_exceeded: slow down" in result.error


def test_responses_eof_without_completed_is_truncated() -> None:
    with serve_events(*responses_start(), output_delta("a")) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.TRUNCATED
    assert result.error is not None and "response.completed" in result.error


def test_responses_reasoning_and_tool_arguments_from_their_own_events() -> None:
    events = [
        *responses_start(),
        output_delta("hm", "response.reasoning_text.delta"),
        output_delta('{"numbers":', "response.function_call_arguments.delta"),
        output_delta(' "one"}', "response.function_call_arguments.delta"),
        responses_end("response.completed", status="completed"),
    ]
    parts = [SSE_HEADERS, *(chunk(e + b"\n\n") for e in events), b"0\r\n\r\n"]
    with ScriptedServer(send(*parts, delay=0.02, then_close=True)) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.OK, result.error
    assert (result.content_events, result.reasoning_events, result.tool_call_events) == (3, 1, 2)
    assert result.first_token_ns is not None and result.first_tool_call_ns is not None
    assert result.first_tool_call_ns > result.first_token_ns
    assert result.first_answer_ns == result.first_tool_call_ns


def test_only_lifecycle_events_then_completed_is_empty() -> None:
    end = responses_end("response.completed", status="completed")
    with serve_events(*responses_start(), end) as server:
        result = probe(server.url, "responses")
    assert result.outcome is Outcome.EMPTY
