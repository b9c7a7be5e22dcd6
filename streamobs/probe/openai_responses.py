"""What one event of a Responses API stream (``/v1/responses``) means for the probe.

The stream is typed ``event:``/``data:`` pairs, each payload naming its ``type`` too; it
has no ``[DONE]``: it ends at ``response.completed`` (or ``response.incomplete``,
``response.failed``), which carries the usage. Lifecycle events (``response.created``,
``..._item.added``, ``..._part.done`` and so on) are never output.
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
from streamobs.probe.result import Outcome

ANSWER_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.refusal.delta",
    }
)
# vLLM streams reasoning as reasoning_text; OpenAI's own API streams a summary of it.
REASONING_DELTAS = frozenset(
    {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}
)
TOOL_DELTAS = frozenset({"response.function_call_arguments.delta"})
COMPLETED = "response.completed"
INCOMPLETE = "response.incomplete"
FAILED = "response.failed"
# The reason a response that stopped at its output limit gives: a probe asks for a fixed
# number of tokens, so this is its normal end (chat's finish_reason "length").
LIMIT_REASON = "max_output_tokens"


def interpret_responses(event: str, data: str) -> Chunk:
    """Classify one event; ``event`` is the SSE event name, the payload's ``type`` wins."""
    obj = parse_object(data)
    kind = obj.get("type") if isinstance(obj.get("type"), str) else event
    if kind in ANSWER_DELTAS or kind in REASONING_DELTAS:
        output = nonempty_text(obj.get("delta"))
        reasoning = kind in REASONING_DELTAS
        return Chunk(
            has_token=output,
            has_answer=output and not reasoning,
            has_reasoning=output and reasoning,
            has_tool_call=output and kind in TOOL_DELTAS,
        )
    if kind == "error":
        error = obj.get("error") if isinstance(obj.get("error"), dict) else obj
        return Chunk(error=describe_error(_error_fields(error)))
    response = obj.get("response")
    if not isinstance(response, dict):
        return Chunk()
    if kind == FAILED:
        failure = response.get("error")
        detail = describe_error(_error_fields(failure)) if failure else "no reason given"
        return Chunk(error=f"response.failed: {detail}", **_head(response))
    if kind in (COMPLETED, INCOMPLETE):
        reason = _incomplete_reason(response)
        if kind == INCOMPLETE and reason != LIMIT_REASON:
            # Stopped early for another reason than the limit the probe set (a content
            # filter, a server limit): the answer is cut short.
            return Chunk(
                error=f"response.incomplete: {reason or 'no reason given'}",
                error_outcome=Outcome.TRUNCATED,
                **_head(response),
                **_usage(response),
            )
        return Chunk(
            done=True,
            finish_reason=reason or text_or_none(response.get("status")),
            **_head(response),
            **_usage(response),
        )
    return Chunk(**_head(response))


def _error_fields(error: Any) -> Any:
    """OpenAI's errors name their kind in ``code``: describe it as the type."""
    if isinstance(error, dict) and error.get("code") and error.get("type") in (None, "error"):
        return {"type": error["code"], "message": error.get("message")}
    return error


def _incomplete_reason(response: dict[str, Any]) -> str | None:
    details = response.get("incomplete_details")
    return text_or_none(details.get("reason")) if isinstance(details, dict) else None


def _head(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "response_id": text_or_none(response.get("id")),
        "model": text_or_none(response.get("model")),
    }


def _usage(response: dict[str, Any]) -> dict[str, Any]:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return {}
    details = usage.get("output_tokens_details")
    return {
        "completion_tokens": int_or_none(usage.get("output_tokens")),
        "prompt_tokens": int_or_none(usage.get("input_tokens")),
        "reasoning_tokens": int_or_none(details.get("reasoning_tokens"))
        if isinstance(details, dict)
        else None,
    }
