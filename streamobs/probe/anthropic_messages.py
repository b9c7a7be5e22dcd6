"""What one event of an Anthropic Messages stream (``/v1/messages``) means for the probe.

``message_start`` (id, model, input tokens), then per content block
``content_block_start``/``_delta``/``_stop``, ``message_delta`` (``stop_reason`` and the
output tokens), and ``message_stop``, the terminal event; no ``[DONE]``. Any non-empty
``content_block_delta`` is output: ``text_delta`` and ``input_json_delta`` (a tool call's
arguments) are the answer, ``thinking_delta`` is reasoning. ``ping`` never counts; an
``error`` event (``overloaded_error``...) after HTTP 200 is a stream error.
"""

from __future__ import annotations

from typing import Any

from streamobs.probe.chunks import (
    Chunk,
    describe_error,
    int_or_none,
    nonempty_text,
    parse_object,
    text_or_none,
)

# delta type -> (field with the generated text, reasoning?, tool call?)
_DELTAS: dict[str, tuple[str, bool, bool]] = {
    "text_delta": ("text", False, False),
    "thinking_delta": ("thinking", True, False),
    "input_json_delta": ("partial_json", False, True),
}
# signature_delta (a thinking block's signature) is not generated output.
TERMINAL = "message_stop"


def interpret_messages(event: str, data: str) -> Chunk:
    """Classify one event; ``event`` is the SSE event name, the payload's ``type`` wins."""
    obj = parse_object(data)
    kind = obj.get("type") if isinstance(obj.get("type"), str) else event
    if kind == "content_block_delta":
        delta = obj.get("delta")
        if not isinstance(delta, dict) or not isinstance(delta.get("type"), str):
            return Chunk()
        spec = _DELTAS.get(delta["type"])
        if spec is None:
            return Chunk()
        field, reasoning, tool = spec
        output = nonempty_text(delta.get(field))
        return Chunk(
            has_token=output,
            has_answer=output and not reasoning,
            has_reasoning=output and reasoning,
            has_tool_call=output and tool,
        )
    if kind == TERMINAL:
        return Chunk(done=True)
    if kind == "error":
        return Chunk(error=describe_error(obj.get("error", obj)))
    if kind == "message_start":
        message = obj.get("message")
        if not isinstance(message, dict):
            return Chunk()
        usage = message.get("usage")
        return Chunk(
            response_id=text_or_none(message.get("id")),
            model=text_or_none(message.get("model")),
            prompt_tokens=_count(usage, "input_tokens"),
        )
    if kind == "message_delta":
        delta = obj.get("delta")
        usage = obj.get("usage")
        return Chunk(
            finish_reason=text_or_none(delta.get("stop_reason"))
            if isinstance(delta, dict)
            else None,
            # Cumulative: the last message_delta has the message's output tokens.
            completion_tokens=_count(usage, "output_tokens"),
            prompt_tokens=_count(usage, "input_tokens"),
        )
    return Chunk()  # ping, content_block_start/stop, and types added later


def _count(usage: Any, key: str) -> int | None:
    return int_or_none(usage.get(key)) if isinstance(usage, dict) else None
