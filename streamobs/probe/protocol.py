"""The four streaming protocols a probe speaks: where each is served, what its request
looks like, how its events are read and which event ends it.

chat (``/chat/completions``) and completions (``/completions``) stream untyped ``data:``
chunks ending in ``[DONE]`` (vLLM: after ``finish_reason``); Responses (``/responses``)
and Anthropic Messages (``/messages``) stream typed events ending at
``response.completed`` and ``message_stop``. Each has its own output limit field and its
own place for the usage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from streamobs.probe.anthropic_messages import interpret_messages
from streamobs.probe.chunks import Chunk, interpret
from streamobs.probe.openai_responses import interpret_responses
from streamobs.secret import Credential, Secret, authorization

# The one function a tool-call probe offers, and forces: its arguments are generated
# output like any text, streamed as tool-call deltas in each protocol's own shape.
TOOL_NAME: Final = "record_numbers"
TOOL_DESCRIPTION: Final = "Record the numbers counted so far."
TOOL_PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "numbers": {
            "type": "string",
            "description": "the numbers, as English words separated by spaces",
        }
    },
    "required": ["numbers"],
}
ANTHROPIC_VERSION: Final = "2023-06-01"


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What a probe asks for, whatever the protocol."""

    model: str
    prompt: str
    max_tokens: int
    ignore_eos: bool
    tool_call: bool


@dataclass(frozen=True, slots=True)
class Protocol:
    endpoint: str
    path: str  # under the API root (``.../v1``)
    interpret: Callable[[str, str], Chunk]  # (SSE event name, data) -> meaning
    terminal: str  # the end of a stream, for messages
    # chat and completions: vLLM's last chunk carries finish_reason, and a stream that
    # closes after it is complete even without [DONE]; typed protocols need their event.
    ends_at_finish_reason: bool
    tools: bool  # can request a tool call
    build: Callable[[RequestShape], dict[str, Any]]


def _chat_tools() -> dict[str, Any]:
    function = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_PARAMETERS}
    return {
        "tools": [{"type": "function", "function": function}],
        "tool_choice": {"type": "function", "function": {"name": TOOL_NAME}},
    }


def _openai_body(shape: RequestShape, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": shape.model,
        "max_tokens": shape.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat:
        body["messages"] = [{"role": "user", "content": shape.prompt}]
    else:
        body["prompt"] = shape.prompt
    if chat and shape.tool_call:
        body.update(_chat_tools())
    return body


def _responses_body(shape: RequestShape) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": shape.model,
        "input": shape.prompt,
        "max_output_tokens": shape.max_tokens,
        "temperature": 0,
        "stream": True,  # usage always comes with response.completed
    }
    if shape.tool_call:
        body["tools"] = [
            {
                "type": "function",
                "name": TOOL_NAME,
                "description": TOOL_DESCRIPTION,
                "parameters": TOOL_PARAMETERS,
            }
        ]
        body["tool_choice"] = {"type": "function", "name": TOOL_NAME}
    return body


def _messages_body(shape: RequestShape) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": shape.model,
        "max_tokens": shape.max_tokens,  # required by the protocol
        "messages": [{"role": "user", "content": shape.prompt}],
        "temperature": 0,
        "stream": True,  # usage comes in message_start and message_delta
    }
    if shape.tool_call:
        body["tools"] = [
            {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_PARAMETERS}
        ]
        body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    return body


def _untyped(event: str, data: str) -> Chunk:
    return interpret(data)


PROTOCOLS: Final[dict[str, Protocol]] = {
    "chat": Protocol(
        "chat",
        "/chat/completions",
        _untyped,
        "[DONE] or finish_reason",
        ends_at_finish_reason=True,
        tools=True,
        build=lambda shape: _openai_body(shape, chat=True),
    ),
    "completions": Protocol(
        "completions",
        "/completions",
        _untyped,
        "[DONE] or finish_reason",
        ends_at_finish_reason=True,
        tools=False,
        build=lambda shape: _openai_body(shape, chat=False),
    ),
    "responses": Protocol(
        "responses",
        "/responses",
        interpret_responses,
        "response.completed",
        ends_at_finish_reason=False,
        tools=True,
        build=_responses_body,
    ),
    "messages": Protocol(
        "messages",
        "/messages",
        interpret_messages,
        "message_stop",
        ends_at_finish_reason=False,
        tools=True,
        build=_messages_body,
    ),
}


def request_body(endpoint: str, shape: RequestShape) -> dict[str, Any]:
    """The JSON body of a streaming request; vLLM's ``ignore_eos`` last when asked for."""
    body = PROTOCOLS[endpoint].build(shape)
    if shape.ignore_eos:
        body["ignore_eos"] = True
    return body


def non_streaming(body: dict[str, Any]) -> dict[str, Any]:
    """The same request asking for one JSON body instead of a stream (every protocol
    names it ``stream``; only chat and completions have ``stream_options``)."""
    plain = dict(body)
    plain["stream"] = False
    plain.pop("stream_options", None)
    return plain


def auth_headers(endpoint: str, credential: Credential) -> dict[str, str]:
    """``Authorization``: the bearer token (an API key) or basic auth. With an API key,
    Messages clients send ``x-api-key`` too; vLLM's ``--api-key`` check reads the bearer
    token on every path, so a Messages probe sends both."""
    headers = {"Authorization": authorization(credential)}
    if endpoint == "messages" and isinstance(credential, Secret):
        headers = {"x-api-key": credential.reveal(), **headers}
    return headers


def protocol_headers(endpoint: str) -> dict[str, str]:
    return {"anthropic-version": ANTHROPIC_VERSION} if endpoint == "messages" else {}
