"""JSON bodies and SSE events shaped like vLLM 0.32's, key for key and in the same order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
RESPONSES_ENDPOINT = "/v1/responses"
MESSAGES_ENDPOINT = "/v1/messages"
ENDPOINTS: tuple[str, ...] = (
    CHAT_ENDPOINT,
    COMPLETIONS_ENDPOINT,
    RESPONSES_ENDPOINT,
    MESSAGES_ENDPOINT,
)

DONE_EVENT = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT = b": keep-alive\n\n"
# Byte for byte what vLLM sent after HTTP 200 when its engine died mid-request
# (it uses json.dumps' default separators here, unlike in the chunks).
ENGINE_DEAD_EVENT = (
    b'data: {"error": {"message": "EngineCore encountered an issue. See stack trace (above) '
    b'for the root cause.", "type": "InternalServerError", "param": null, "code": 500}}\n\n'
)

# One word per token, cycled: deterministic, readable text.
WORDS: tuple[str, ...] = (
    " the", " stream", " of", " tokens", " flows", " from", " the", " server", " to",
    " the", " client", " one", " event", " at", " a", " time", ",", " steady", " and",
    " in", " order", ".",
)  # fmt: skip


def token_text(index: int) -> str:
    return WORDS[index % len(WORDS)]


def dumps(obj: object) -> bytes:
    # vLLM writes compact JSON and leaves non-ASCII text unescaped.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sse_event(obj: object) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def system_fingerprint(model: str) -> str:
    return "vllm-0.32.0-" + hashlib.sha256(model.encode("utf-8")).hexdigest()[:8]


def error_body(message: str, error_type: str, param: str | None, code: int) -> bytes:
    return dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}})


def error_body_for(
    endpoint: str, message: str, error_type: str, param: str | None, code: int
) -> bytes:
    """vLLM's error body for the endpoint: Anthropic's shape for Messages, else OpenAI's."""
    if endpoint == MESSAGES_ENDPOINT:
        return dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return error_body(message, error_type, param, code)


def typed_event(kind: str, obj: dict[str, Any]) -> bytes:
    """An `event:`/`data:` pair (Responses, Messages): the name is the payload's type."""
    return b"event: " + kind.encode() + b"\ndata: " + dumps(obj) + b"\n\n"


def cut_event(event: bytes) -> bytes:
    """The same event with its JSON cut off halfway, as a broken proxy would send it."""
    head, _, data = event.rstrip(b"\n").rpartition(b"data: ")
    return head + b"data: " + data[: len(data) // 2] + b"\n\n"


class StreamChunks:
    """The `data:` events of one streamed response."""

    def __init__(self, endpoint: str, response_id: str, created: int, model: str) -> None:
        self._chat = endpoint == CHAT_ENDPOINT
        self._head: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._fingerprint = system_fingerprint(model)

    def role(self) -> bytes:
        """Chat only: the first chunk carries the role and no text."""
        return sse_event(
            {
                **self._head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                "prompt_token_ids": None,
                "prompt_text": None,
            }
        )

    def token(
        self,
        text: str,
        finish_reason: str | None,
        ends_stream: bool,
        delta: dict[str, Any] | None = None,
    ) -> bytes:
        """One token; the last carries finish_reason (and the fingerprint if nothing follows).
        ``delta`` replaces chat's ``{"content": text}`` (reasoning, tool calls)."""
        choice: dict[str, Any] = {"index": 0}
        if self._chat:
            choice["delta"] = delta if delta is not None else {"content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        if finish_reason is not None or not self._chat:
            choice["stop_reason"] = None
        if not self._chat:
            choice["prompt_token_ids"] = None
        choice["token_ids"] = None
        chunk: dict[str, Any] = {**self._head, "choices": [choice]}
        if ends_stream:
            chunk["system_fingerprint"] = self._fingerprint
        return sse_event(chunk)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return sse_event(
            {
                **self._head,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "completion_tokens": completion_tokens,
                },
                "system_fingerprint": self._fingerprint,
            }
        )

    def malformed(self, text: str) -> bytes:
        """A token event cut off mid-JSON, as a broken proxy or encoder would emit it."""
        whole = dumps({**self._head, "choices": [{"index": 0, "delta": {"content": text}}]})
        return b"data: " + whole[: len(whole) // 2] + b"\n\n"


def completion_body(
    endpoint: str,
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    reasoning: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> bytes:
    """A non-streamed chat completion or text completion; chat may carry reasoning and
    tool calls (then without text content)."""
    choice: dict[str, Any] = {"index": 0}
    if endpoint == CHAT_ENDPOINT:
        choice["message"] = {
            "role": "assistant",
            "content": None if tool_calls else text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": tool_calls or [],
            "reasoning_content": reasoning or None,
        }
        choice.update(logprobs=None, finish_reason=finish_reason, stop_reason=None)
    else:
        choice.update(
            text=text,
            logprobs=None,
            finish_reason=finish_reason,
            stop_reason=None,
            prompt_logprobs=None,
            prompt_token_ids=None,
        )
    choice["token_ids"] = None
    return dumps(
        {
            "id": response_id,
            "object": "chat.completion" if endpoint == CHAT_ENDPOINT else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": system_fingerprint(model),
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": None,
            },
            "kv_transfer_params": None,
        }
    )


def models_body(
    model: str,
    max_model_len: int,
    created: int,
    permission_id: str,
    adapters: Sequence[str] = (),
) -> bytes:
    """vLLM's model list: the model, then each LoRA adapter (root: its path, parent: the
    model, no max_model_len of its own)."""

    def card(name: str, root: str, parent: str | None, length: int | None) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": root,
            "parent": parent,
            "max_model_len": length,
            "permission": [
                {
                    "id": permission_id,
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }

    cards = [card(model, model, None, max_model_len)]
    cards += [card(name, f"/adapters/{name}", model, None) for name in adapters]
    return dumps({"object": "list", "data": cards})
