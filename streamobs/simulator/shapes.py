"""The events of one streamed response in each protocol, shaped like vLLM 0.32's.

A stream is the same generation whatever the protocol: tokens at their deadlines, the
first ``reasoning_tokens`` of them reasoning, the rest text or a tool call's arguments.
A shape turns that into the protocol's bytes: lifecycle events, one delta event per
token, and the end (chat: ``[DONE]``; Responses: ``response.completed``; Messages:
``message_stop``), with the usage where the protocol carries it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from streamobs.simulator.payloads import (
    CHAT_ENDPOINT,
    DONE_EVENT,
    ENGINE_DEAD_EVENT,
    MESSAGES_ENDPOINT,
    RESPONSES_ENDPOINT,
    StreamChunks,
    completion_body,
    cut_event,
    dumps,
    token_text,
)
from streamobs.simulator.plan import GenerationPlan

ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
# A tool call's arguments, streamed a word per token: {"numbers": " the stream ..."}.
ARGUMENTS_OPEN = '{"numbers": "'
ARGUMENTS_CLOSE = '"}'


@dataclass(frozen=True, slots=True)
class Piece:
    kind: str  # "reasoning", "text" or "tool"
    text: str
    # A token that ends inside a UTF-8 character: no text yet; the next piece has it.
    held: bool = False


def pieces(plan: GenerationPlan, partial_every: int = 0) -> list[Piece]:
    """What each token of the plan carries, in order; with ``partial_every`` every
    that-many-th token is held and its text rides on the next token of the same kind."""
    out = _whole_pieces(plan)
    if partial_every <= 0:
        return out
    for index in range(partial_every - 1, len(out) - 1, partial_every):
        piece, after = out[index], out[index + 1]
        if piece.kind == after.kind and piece.kind != "tool" and not piece.held:
            out[index] = Piece(piece.kind, "", held=True)
            out[index + 1] = Piece(after.kind, piece.text + after.text)
    return out


def _whole_pieces(plan: GenerationPlan) -> list[Piece]:
    out: list[Piece] = []
    answer = range(plan.reasoning_tokens, plan.completion_tokens)
    for index in range(plan.completion_tokens):
        text = token_text(index)
        if index < plan.reasoning_tokens:
            out.append(Piece("reasoning", text))
        elif plan.tool_name is not None:
            if index == answer.start:
                text = ARGUMENTS_OPEN + text
            if index == answer.stop - 1:
                text += ARGUMENTS_CLOSE
            out.append(Piece("tool", text))
        else:
            out.append(Piece("text", text))
    return out


class StreamShape(Protocol):
    def early(self) -> list[bytes]:
        """Events sent as soon as the headers are (Responses: created, in_progress)."""

    def opening(self) -> list[bytes]:
        """Events sent with the first output, right before it (chat's role chunk)."""

    def token(self, piece: Piece, last: bool) -> tuple[list[bytes], bytes | None]:
        """The events that open a new block (if this token starts one), and its delta:
        for a held piece chat's empty-content chunk, None in the typed protocols."""

    def finish(self) -> tuple[list[bytes], bytes | None, str]:
        """Closing events, the terminal event, and the finish reason they send."""

    def engine_error(self) -> tuple[bytes, bytes | None]:
        """The error event vLLM sends when its engine dies, and what follows it."""

    def malformed(self, piece: Piece) -> bytes:
        """A delta event cut off mid-JSON."""

    def body(self, all_pieces: list[Piece]) -> bytes:
        """The whole response as one JSON body (stream: false)."""


def make_shape(
    plan: GenerationPlan, response_id: str, created: int, reasoning_field: str
) -> StreamShape:
    if plan.endpoint == RESPONSES_ENDPOINT:
        return ResponsesShape(plan, response_id, created)
    if plan.endpoint == MESSAGES_ENDPOINT:
        return MessagesShape(plan, response_id)
    return ChatShape(plan, response_id, created, reasoning_field)


def derived_id(response_id: str, salt: str) -> str:
    """Ids of the items inside one response, stable for that response."""
    return hashlib.sha256(f"{response_id}/{salt}".encode()).hexdigest()[:16]


def _joined(all_pieces: list[Piece], kind: str) -> str:
    return "".join(p.text for p in all_pieces if p.kind == kind)


class ChatShape:
    """chat and completions: untyped `data:` chunks, finish_reason on the last token."""

    def __init__(
        self, plan: GenerationPlan, response_id: str, created: int, reasoning_field: str
    ) -> None:
        self._plan = plan
        self._id = response_id
        self._created = created
        self._field = reasoning_field
        self._chunks = StreamChunks(plan.endpoint, response_id, created, plan.model)
        self._tool_started = False

    def early(self) -> list[bytes]:
        return []

    def opening(self) -> list[bytes]:
        return [self._chunks.role()] if self._plan.endpoint == CHAT_ENDPOINT else []

    def token(self, piece: Piece, last: bool) -> tuple[list[bytes], bytes | None]:
        plan = self._plan
        delta: dict[str, Any] | None = None  # held pieces: {"content": ""}, as vLLM sends
        if piece.held:
            pass
        elif piece.kind == "reasoning":
            delta = {self._field: piece.text}
        elif piece.kind == "tool":
            function: dict[str, Any] = {"arguments": piece.text}
            call: dict[str, Any] = {"index": 0, "function": function}
            if not self._tool_started:
                self._tool_started = True
                function = {"name": plan.tool_name, "arguments": piece.text}
                call = {
                    "id": "chatcmpl-tool-" + derived_id(self._id, "tool"),
                    "type": "function",
                    "index": 0,
                    "function": function,
                }
            delta = {"tool_calls": [call]}
        event = self._chunks.token(
            piece.text,
            finish_reason=plan.finish_reason if last else None,
            ends_stream=last and not plan.include_usage,
            delta=delta,
        )
        return [], event

    def finish(self) -> tuple[list[bytes], bytes | None, str]:
        plan = self._plan
        events = []
        if plan.include_usage:
            events.append(self._chunks.usage(plan.prompt_tokens, plan.completion_tokens))
        return events, DONE_EVENT, plan.finish_reason

    def engine_error(self) -> tuple[bytes, bytes | None]:
        return ENGINE_DEAD_EVENT, DONE_EVENT

    def malformed(self, piece: Piece) -> bytes:
        return self._chunks.malformed(piece.text)

    def body(self, all_pieces: list[Piece]) -> bytes:
        plan = self._plan
        calls = None
        if plan.tool_name is not None:
            function = {"name": plan.tool_name, "arguments": _joined(all_pieces, "tool")}
            call_id = "chatcmpl-tool-" + derived_id(self._id, "tool")
            calls = [{"id": call_id, "type": "function", "function": function}]
        return completion_body(
            plan.endpoint,
            self._id,
            self._created,
            plan.model,
            _joined(all_pieces, "text"),
            plan.finish_reason,
            plan.prompt_tokens,
            plan.completion_tokens,
            reasoning=_joined(all_pieces, "reasoning"),
            tool_calls=calls,
        )


# Responses item kinds: (item type, delta event, done event, id prefix)
_ITEMS: dict[str, tuple[str, str, str, str]] = {
    "text": (
        "message",
        "response.output_text.delta",
        "response.output_text.done",
        "msg_",
    ),
    "reasoning": (
        "reasoning",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "rs_",
    ),
    "tool": (
        "function_call",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "fc_",
    ),
}


class ResponsesShape:
    """``/v1/responses``: typed events numbered by ``sequence_number``, one output item
    per kind of output, ``response.completed`` with the usage at the end."""

    def __init__(self, plan: GenerationPlan, response_id: str, created: int) -> None:
        self._plan = plan
        self._id = response_id
        self._created = created
        self._sequence = 0
        self._output: list[dict[str, Any]] = []  # finished items
        self._kind: str | None = None  # of the item being streamed
        self._item_id = ""
        self._text = ""

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        # vLLM's Responses events list their top-level fields in alphabetical order.
        obj = dict(sorted({**fields, "sequence_number": self._sequence, "type": kind}.items()))
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(obj) + b"\n\n"

    def _response(self, status: str, output: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        plan = self._plan
        incomplete = None
        if status == "incomplete":
            incomplete = {"reason": "max_output_tokens"}
        return {
            "id": self._id,
            "created_at": self._created,
            "incomplete_details": incomplete,
            "instructions": None,
            "metadata": None,
            "model": plan.model,
            "object": "response",
            "output": output,
            "parallel_tool_calls": True,
            "temperature": 1.0 if plan.temperature is None else plan.temperature,
            "tool_choice": "none" if plan.tool_choice is None else plan.tool_choice,
            "tools": list(plan.tools),
            "top_p": 1.0,
            "background": False,
            "max_output_tokens": plan.max_tokens,
            "max_tool_calls": None,
            "previous_response_id": None,
            "prompt": None,
            "reasoning": None,
            "service_tier": "auto",
            "status": status,
            "text": None,
            "top_logprobs": None,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "input_messages": None,
            "output_messages": None,
        }

    def _usage(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "input_tokens": plan.prompt_tokens,
            "input_tokens_details": {
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "input_tokens_per_turn": [],
                "cached_tokens_per_turn": [],
            },
            "output_tokens": plan.completion_tokens,
            "output_tokens_details": {
                "reasoning_tokens": plan.reasoning_tokens,
                "tool_output_tokens": 0,
                "output_tokens_per_turn": [],
                "tool_output_tokens_per_turn": [],
            },
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        }

    def _status(self) -> str:
        return "incomplete" if self._plan.finish_reason == "length" else "completed"

    def _item(self, kind: str, item_id: str, text: str, done: bool) -> dict[str, Any]:
        status = "completed" if done else "in_progress"
        if kind == "text":
            content: list[dict[str, Any]] = [
                {"annotations": [], "text": text, "type": "output_text", "logprobs": None}
            ]
            return {
                "id": item_id,
                "content": content if done else [],
                "role": "assistant",
                "status": status,
                "type": "message",
                "phase": None,
            }
        if kind == "reasoning":
            return {
                "id": item_id,
                "summary": [],
                "type": "reasoning",
                "content": [{"text": text, "type": "reasoning_text"}] if done else None,
                "encrypted_content": None,
                "status": status,
            }
        return {
            "arguments": text,
            "call_id": "call_" + derived_id(self._id, "call"),
            "name": self._plan.tool_name,
            "type": "function_call",
            "id": item_id,
            "status": status,
        }

    def _open(self, kind: str) -> list[bytes]:
        self._kind, self._text = kind, ""
        self._item_id = _ITEMS[kind][3] + derived_id(self._id, f"item{len(self._output)}")
        index = len(self._output)
        events = [
            self._event(
                "response.output_item.added",
                {"item": self._item(kind, self._item_id, "", False), "output_index": index},
            )
        ]
        if kind == "text":
            part = {"annotations": [], "text": "", "type": "output_text", "logprobs": []}
            events.append(
                self._event(
                    "response.content_part.added",
                    {
                        "content_index": 0,
                        "item_id": self._item_id,
                        "output_index": index,
                        "part": part,
                    },
                )
            )
        return events

    def _close(self) -> list[bytes]:
        kind = self._kind
        if kind is None:
            return []
        index, item_id, text = len(self._output), self._item_id, self._text
        done_event = _ITEMS[kind][2]
        if kind == "tool":
            events = [
                self._event(
                    done_event, {"arguments": text, "item_id": item_id, "output_index": index}
                )
            ]
        else:
            fields: dict[str, Any] = {"content_index": 0, "item_id": item_id}
            if kind == "text":
                fields["logprobs"] = []
            fields.update(output_index=index, text=text)
            events = [self._event(done_event, fields)]
        if kind == "text":
            part: dict[str, Any] = {
                "annotations": [],
                "text": text,
                "type": "output_text",
                "logprobs": None,
            }
            events.append(
                self._event(
                    "response.content_part.done",
                    {"content_index": 0, "item_id": item_id, "output_index": index, "part": part},
                )
            )
        item = self._item(kind, item_id, text, True)
        events.append(
            self._event("response.output_item.done", {"item": item, "output_index": index})
        )
        self._output.append(item)
        self._kind = None
        return events

    def early(self) -> list[bytes]:
        response = self._response("in_progress", [], None)
        return [
            self._event("response.created", {"response": response}),
            self._event("response.in_progress", {"response": response}),
        ]

    def opening(self) -> list[bytes]:
        return []

    def _delta_fields(self, piece: Piece) -> dict[str, Any]:
        index = len(self._output)
        if piece.kind == "tool":
            return {"delta": piece.text, "item_id": self._item_id, "output_index": index}
        fields: dict[str, Any] = {"content_index": 0, "delta": piece.text}
        fields["item_id"] = self._item_id
        if piece.kind == "text":
            fields["logprobs"] = []
        fields["output_index"] = index
        return fields

    def token(self, piece: Piece, last: bool) -> tuple[list[bytes], bytes | None]:
        before: list[bytes] = []
        if piece.kind != self._kind:
            before = self._close() + self._open(piece.kind)
        if piece.held:
            return before, None
        self._text += piece.text
        return before, self._event(_ITEMS[piece.kind][1], self._delta_fields(piece))

    def finish(self) -> tuple[list[bytes], bytes | None, str]:
        events = self._close()
        status = self._status()
        response = self._response(status, list(self._output), self._usage())
        completed = self._event("response.completed", {"response": response})
        return events, completed, "max_output_tokens" if status == "incomplete" else status

    def engine_error(self) -> tuple[bytes, bytes | None]:
        fields = {"code": "InternalServerError", "message": ENGINE_DEAD_MESSAGE, "param": None}
        return self._event("error", fields), None

    def malformed(self, piece: Piece) -> bytes:
        kind = self._kind or piece.kind
        event = self._event(_ITEMS[kind][1], self._delta_fields(piece))
        return cut_event(event)

    def body(self, all_pieces: list[Piece]) -> bytes:
        output = []
        for index, kind in enumerate(
            k for k in ("reasoning", "tool", "text") if _joined(all_pieces, k)
        ):
            item_id = _ITEMS[kind][3] + derived_id(self._id, f"item{index}")
            output.append(self._item(kind, item_id, _joined(all_pieces, kind), True))
        return dumps(self._response(self._status(), output, self._usage()))


_STOP_REASONS = {"length": "max_tokens", "stop": "end_turn"}


class MessagesShape:
    """``/v1/messages`` as vLLM serves it: message_start, a content block per kind of
    output, message_delta with the stop reason and usage, message_stop."""

    def __init__(self, plan: GenerationPlan, response_id: str) -> None:
        self._plan = plan
        self._id = response_id
        self._block = -1
        self._kind: str | None = None

    @staticmethod
    def _event(kind: str, fields: dict[str, Any]) -> bytes:
        obj = {"type": kind, **fields}
        return b"event: " + kind.encode() + b"\ndata: " + dumps(obj) + b"\n\n"

    def _stop_reason(self) -> str:
        if self._plan.tool_name is not None:
            return "tool_use"
        return _STOP_REASONS[self._plan.finish_reason]

    def _start_block(self, kind: str) -> bytes:
        self._block += 1
        self._kind = kind
        block: dict[str, Any]
        if kind == "text":
            block = {"type": "text", "text": ""}
        elif kind == "reasoning":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            tool_id = "toolu_" + derived_id(self._id, "tool")
            block = {"type": "tool_use", "id": tool_id, "name": self._plan.tool_name, "input": {}}
        return self._event("content_block_start", {"content_block": block, "index": self._block})

    def _delta(self, piece: Piece) -> bytes:
        if piece.kind == "text":
            delta = {"type": "text_delta", "text": piece.text}
        elif piece.kind == "reasoning":
            delta = {"type": "thinking_delta", "thinking": piece.text}
        else:
            delta = {"type": "input_json_delta", "partial_json": piece.text}
        return self._event("content_block_delta", {"delta": delta, "index": self._block})

    def early(self) -> list[bytes]:
        return []

    def opening(self) -> list[bytes]:
        plan = self._plan
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": plan.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": 0},
        }
        return [self._event("message_start", {"message": message})]

    def token(self, piece: Piece, last: bool) -> tuple[list[bytes], bytes | None]:
        before: list[bytes] = []
        if piece.kind != self._kind:
            if self._kind is not None:
                before.append(self._event("content_block_stop", {"index": self._block}))
            before.append(self._start_block(piece.kind))
        return before, None if piece.held else self._delta(piece)

    def finish(self) -> tuple[list[bytes], bytes | None, str]:
        plan = self._plan
        events = []
        if self._kind is not None:
            events.append(self._event("content_block_stop", {"index": self._block}))
        reason = self._stop_reason()
        usage = {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens}
        events.append(
            self._event(
                "message_delta",
                {"delta": {"stop_reason": reason, "stop_sequence": None}, "usage": usage},
            )
        )
        return events, self._event("message_stop", {}), reason

    def engine_error(self) -> tuple[bytes, bytes | None]:
        error = {"type": "InternalServerError", "message": ENGINE_DEAD_MESSAGE}
        return self._event("error", {"error": error}), None

    def malformed(self, piece: Piece) -> bytes:
        return cut_event(self._delta(piece))

    def body(self, all_pieces: list[Piece]) -> bytes:
        plan = self._plan
        content: list[dict[str, Any]] = []
        if _joined(all_pieces, "reasoning"):
            content.append(
                {"type": "thinking", "thinking": _joined(all_pieces, "reasoning"), "signature": ""}
            )
        if plan.tool_name is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + derived_id(self._id, "tool"),
                    "name": plan.tool_name,
                    "input": {"numbers": _joined(all_pieces, "tool")[len(ARGUMENTS_OPEN) : -2]},
                }
            )
        elif _joined(all_pieces, "text"):
            content.append({"type": "text", "text": _joined(all_pieces, "text")})
        return dumps(
            {
                "id": self._id,
                "type": "message",
                "role": "assistant",
                "content": content,
                "model": plan.model,
                "stop_reason": self._stop_reason(),
                "stop_sequence": None,
                "usage": {
                    "input_tokens": plan.prompt_tokens,
                    "output_tokens": plan.completion_tokens,
                },
            }
        )
