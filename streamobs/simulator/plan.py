"""Turn a completion request body into what to generate, or into vLLM's error reply."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.payloads import (
    CHAT_ENDPOINT,
    COMPLETIONS_ENDPOINT,
    MESSAGES_ENDPOINT,
    RESPONSES_ENDPOINT,
    error_body,
    error_body_for,
)


class ApiError(Exception):
    """A request vLLM would refuse, with the status and JSON body it would send."""

    def __init__(self, status: int, message: str, error_type: str, param: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.param = param
        self.body = error_body(message, error_type, param, status)

    def body_for(self, endpoint: str) -> bytes:
        """The body in the endpoint's own error shape (Anthropic's for Messages)."""
        return error_body_for(endpoint, str(self), self.error_type, self.param, self.status)


@dataclass(frozen=True)
class GenerationPlan:
    endpoint: str
    model: str  # as requested (an adapter's name for a LoRA request), as the reply says
    stream: bool
    include_usage: bool
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "length" or "stop"; each protocol names it its own way
    # The first of the completion tokens that are reasoning (config.reasoning_tokens).
    reasoning_tokens: int = 0
    # The function the answer calls when the request forces a tool call, else None.
    tool_name: str | None = None
    max_tokens: int | None = None  # as requested
    temperature: float | None = None
    tools: tuple[Any, ...] = ()
    tool_choice: Any = None
    # What the engine's /metrics count the request under: the model, for its adapters too.
    engine_model: str = ""

    def __post_init__(self) -> None:
        if not self.engine_model:
            object.__setattr__(self, "engine_model", self.model)


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
    if model not in config.served_models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: "
            f"{', '.join(config.served_models)}.",
            "NotFoundError",
            "model",
        )

    chat = endpoint in (CHAT_ENDPOINT, MESSAGES_ENDPOINT)
    if endpoint == RESPONSES_ENDPOINT:
        prompt_tokens = _responses_prompt_tokens(request)
    elif chat:
        prompt_tokens = _chat_prompt_tokens(request)
    else:
        prompt_tokens = _completion_prompt_tokens(request)
    stream = _optional(request, "stream", bool, False)
    stream_options = _optional(request, "stream_options", dict, {})
    # Responses and Messages always report usage (in their last events).
    include_usage = endpoint in (RESPONSES_ENDPOINT, MESSAGES_ENDPOINT) or _optional(
        stream_options, "include_usage", bool, False
    )
    ignore_eos = _optional(request, "ignore_eos", bool, False)

    # Chat accepts the newer OpenAI name too; the error message names what was sent.
    limit_name = "max_tokens"
    if endpoint == RESPONSES_ENDPOINT:
        limit_name = "max_output_tokens"
    elif chat and request.get("max_completion_tokens") is not None:
        limit_name = "max_completion_tokens"
    max_tokens = _optional(request, limit_name, int, None)
    if endpoint == MESSAGES_ENDPOINT and max_tokens is None:
        raise _bad_request("max_tokens: Field required", "max_tokens")
    # vLLM serves Messages through chat, so its errors name chat's field.
    shown = "max_completion_tokens" if endpoint == MESSAGES_ENDPOINT else limit_name
    if max_tokens is not None:
        if max_tokens < 1:
            raise _bad_request(f"{shown} must be at least 1, got {max_tokens}.", shown)
        if max_tokens > config.max_model_len:
            raise _bad_request(
                f"{shown}={max_tokens} cannot be greater than "
                f"max_model_len={config.max_model_len}. Please request fewer output tokens. "
                f"(parameter={shown}, value={max_tokens})",
                shown,
            )
    if prompt_tokens >= config.max_model_len:
        raise _bad_request(
            f"This model's maximum context length is {config.max_model_len} tokens. "
            f"However, your request has {prompt_tokens} input tokens. "
            "Please reduce the length of the input.",
            {RESPONSES_ENDPOINT: "input", COMPLETIONS_ENDPOINT: "prompt"}.get(endpoint, "messages"),
        )
    tools = _optional(request, "tools", list, [])
    tool_choice = request.get("tool_choice")
    temperature = request.get("temperature")

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
        reasoning_tokens=min(config.reasoning_tokens, count),
        tool_name=None if endpoint == COMPLETIONS_ENDPOINT else _forced_tool(tools, tool_choice),
        max_tokens=max_tokens,
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        tools=tuple(tools),
        tool_choice=tool_choice,
        engine_model=config.model,
    )


def _forced_tool(tools: list[Any], choice: Any) -> str | None:
    """The function a request makes the model call: one named by ``tool_choice`` (each
    protocol names it its own way), or the first tool for "required" / Anthropic "any"."""
    if not tools:
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str) and name:
            return name
        choice = choice.get("type")
    if choice not in ("required", "any"):
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    function = first.get("function")
    name = function.get("name") if isinstance(function, dict) else first.get("name")
    return name if isinstance(name, str) and name else "tool"


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


def _responses_prompt_tokens(request: dict[str, Any]) -> int:
    """``input`` is a string or a list of messages, as in chat."""
    value = request.get("input")
    if isinstance(value, str) and value:
        return 3 + 4 + _text_tokens(value)
    if isinstance(value, list) and value:
        return _chat_prompt_tokens({"messages": value})
    raise _bad_request("input must be a non-empty string or list of messages", "input")


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
