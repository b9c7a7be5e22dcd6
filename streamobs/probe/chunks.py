"""What one SSE data payload of an OpenAI-compatible stream means for the probe.

``Chunk`` is what every protocol's event parser returns (chat and completions here,
Responses and Messages in their own modules), so the prober accounts for all of them
the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamobs.http.bodies import parse_json
from streamobs.probe.result import Outcome

DONE_SENTINEL = "[DONE]"


class MalformedChunk(ValueError):
    """A data payload that is neither ``[DONE]`` nor a JSON object."""


@dataclass(frozen=True, slots=True)
class Chunk:
    done: bool = False  # the protocol's terminal event
    error: str | None = None  # the server's error message when it sent {"error": ...}
    # The class of that failure: an error event is a stream_error; a Responses stream the
    # server ended early for another reason than the output limit is truncated.
    error_outcome: Outcome = Outcome.STREAM_ERROR
    has_token: bool = False  # any generated output: text, reasoning or tool call
    has_answer: bool = False  # non-reasoning output (content, text or tool call)
    has_reasoning: bool = False
    has_tool_call: bool = False  # tool-call name or arguments
    finish_reason: str | None = None  # Messages: stop_reason; Responses: why it ended
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None  # the part of completion_tokens spent reasoning
    response_id: str | None = None
    model: str | None = None


_DONE = Chunk(done=True)


def nonempty_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def describe_error(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        kind = error.get("type")
        text = str(message) if message is not None else json.dumps(error)
        return f"{kind}: {text}" if kind else text
    return str(error)  # cut by the prober once secrets are masked


# Usage counts from a server are taken only when they can be true: a count outside this
# range (negative, or 10**4000) is ignored rather than recorded.
MAX_TOKEN_COUNT = 10**9
# Identifiers and reasons from the server end up in results and logs: bounded.
MAX_TEXT = 256


def int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def text_or_none(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def parse_object(data: str) -> dict[str, Any]:
    """A data payload that must be one JSON object."""
    try:
        obj = parse_json(data)
    except ValueError as exc:
        raise MalformedChunk(f"data is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedChunk("data is JSON but not an object")
    return obj


def interpret(data: str) -> Chunk:
    """Classify one payload. Empty strings never count as tokens: vLLM sends a role-only
    first chunk and empty ``content`` for tokens that end inside a UTF-8 sequence."""
    if data.strip() == DONE_SENTINEL:
        return _DONE
    obj = parse_object(data)
    if "error" in obj and obj["error"] is not None:
        return Chunk(error=describe_error(obj["error"]))
    choices = obj.get("choices", [])
    if not isinstance(choices, list):
        raise MalformedChunk("'choices' is not a list")
    has_token = has_answer = has_reasoning = has_tool_call = False
    finish_reason: str | None = None
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedChunk("a choice is not an object")
        delta = choice.get("delta")
        tool_call = False
        if isinstance(delta, dict):
            # vLLM now sends `reasoning`; SGLang, llama.cpp and older vLLM `reasoning_content`.
            tool_call = bool(delta.get("tool_calls"))
            answer = nonempty_text(delta.get("content")) or tool_call
            reasoning = nonempty_text(delta.get("reasoning_content")) or nonempty_text(
                delta.get("reasoning")
            )
        else:
            answer = nonempty_text(choice.get("text"))
            reasoning = False
        has_tool_call = has_tool_call or tool_call
        has_reasoning = has_reasoning or reasoning
        has_answer = has_answer or answer
        has_token = has_token or answer or reasoning
        reason = choice.get("finish_reason")
        finish_reason = text_or_none(reason) or finish_reason
    usage = obj.get("usage")
    completion_tokens = prompt_tokens = reasoning_tokens = None
    if isinstance(usage, dict):
        completion_tokens = int_or_none(usage.get("completion_tokens"))
        prompt_tokens = int_or_none(usage.get("prompt_tokens"))
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict):
            reasoning_tokens = int_or_none(details.get("reasoning_tokens"))
    response_id = obj.get("id")
    model = obj.get("model")
    return Chunk(
        has_token=has_token,
        has_answer=has_answer,
        has_reasoning=has_reasoning,
        has_tool_call=has_tool_call,
        finish_reason=finish_reason,
        completion_tokens=completion_tokens,
        prompt_tokens=prompt_tokens,
        reasoning_tokens=reasoning_tokens,
        response_id=text_or_none(response_id),
        model=text_or_none(model),
    )
