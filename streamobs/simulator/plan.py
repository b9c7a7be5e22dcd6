"""Turn a completion request body into what to generate, or into vLLM's error reply."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.payloads import CHAT_ENDPOINT, error_body


class ApiError(Exception):
    """A request vLLM would refuse, with the status and JSON body it would send."""

    def __init__(self, status: int, message: str, error_type: str, param: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, error_type, param, status)


@dataclass(frozen=True)
class GenerationPlan:
    endpoint: str
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def plan_request(endpoint: str, body: bytes, config: SimulatorConfig) -> GenerationPlan:
    """Validate a request like vLLM does and decide how many tokens it gets.

    Without `ignore_eos` the model stops by itself after `config.tokens` tokens
    (finish_reason "stop") unless `max_tokens` cuts it short first ("length"); with
    `ignore_eos` it generates exactly `max_tokens`.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_request(f"request body is not valid JSON: {exc}", None) from exc
    if not isinstance(request, dict):
        raise _bad_request("request body must be a JSON object", None)

    model = request.get("model", config.model)
    if not isinstance(model, str):
        raise _bad_request("model must be a string", "model")
    if model != config.model:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {config.model}.",
            "NotFoundError",
            "model",
        )

    chat = endpoint == CHAT_ENDPOINT
    prompt_tokens = _chat_prompt_tokens(request) if chat else _completion_prompt_tokens(request)
    stream = _optional(request, "stream", bool, False)
    stream_options = _optional(request, "stream_options", dict, {})
    include_usage = _optional(stream_options, "include_usage", bool, False)
    ignore_eos = _optional(request, "ignore_eos", bool, False)

    # Chat accepts the newer OpenAI name too; the error message names what was sent.
    limit_name = "max_tokens"
    if chat and request.get("max_completion_tokens") is not None:
        limit_name = "max_completion_tokens"
    max_tokens = _optional(request, limit_name, int, None)
    if max_tokens is not None:
        if max_tokens < 1:
            raise _bad_request(f"{limit_name} must be at least 1, got {max_tokens}.", limit_name)
        if max_tokens > config.max_model_len:
            raise _bad_request(
                f"{limit_name}={max_tokens} cannot be greater than "
                f"max_model_len={config.max_model_len}. Please request fewer output tokens. "
                f"(parameter={limit_name}, value={max_tokens})",
                limit_name,
            )
    if prompt_tokens >= config.max_model_len:
        raise _bad_request(
            f"This model's maximum context length is {config.max_model_len} tokens. "
            f"However, your request has {prompt_tokens} input tokens. "
            "Please reduce the length of the input.",
            "messages" if chat else "prompt",
        )

    # As in vLLM, an absent max_tokens means "whatever fits in the context".
    limit = max_tokens if max_tokens is not None else config.max_model_len - prompt_tokens
    count = limit if ignore_eos else min(limit, config.tokens)
    return GenerationPlan(
        endpoint=endpoint,
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=prompt_tokens,
        completion_tokens=count,
        finish_reason="length" if count >= limit else "stop",
    )


def _bad_request(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, "BadRequestError", param)


def _optional(request: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = request.get(key)
    if value is None:
        return default
    # bool is an int subclass; `max_tokens: true` is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad_request(f"{key} must be of type {kind.__name__}, got {value!r}", key)
    return value


def _text_tokens(text: str) -> int:
    # A rough tokenizer: about four bytes of UTF-8 text per token.
    return (len(text.encode("utf-8")) + 3) // 4


def _chat_prompt_tokens(request: dict[str, Any]) -> int:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_request("messages must be a non-empty list of messages", "messages")
    total = 3  # the chat template's assistant prefix
    for message in messages:
        if not isinstance(message, dict):
            raise _bad_request("each message must be a JSON object", "messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: count the text ones
            content = "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        total += 4 + _text_tokens(content if isinstance(content, str) else "")
    return total


def _completion_prompt_tokens(request: dict[str, Any]) -> int:
    prompt = request.get("prompt")
    if isinstance(prompt, str) and prompt:
        return _text_tokens(prompt)
    # A list of token ids is already tokenized.
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        return len(prompt)
    raise _bad_request("prompt must be a non-empty string or a list of token ids", "prompt")
