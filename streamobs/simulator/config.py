"""Knobs of the simulated server, validated once so a bad value fails where it is set."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamobs.simulator.engines import ENGINE_KINDS

# One uniform draw per request walks these cumulatively, in this order.
FAULTS: tuple[str, ...] = (
    "http_500",
    "http_429",
    "error_event",
    "truncate",
    "reset",
    "stall",
    "hang",
    "malformed",
    "not_sse",
    "oversize",
)

REASONING_FIELDS: tuple[str, ...] = ("reasoning", "reasoning_content")

# What the X-Streamobs-Sim-Fault request header may ask for.
FORCEABLE_FAULTS: tuple[str, ...] = (*FAULTS, "buffered", "none")


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated server behaves. Times are in seconds, probabilities in [0, 1]."""

    model: str = "sim-model"
    # LoRA adapters served beside the model, comma-separated: listed in /v1/models with
    # the model as their parent and accepted as a request's model; as in vLLM, the
    # engine's /metrics count their requests under the model's name.
    adapters: str = ""
    # Whose /metrics the simulator serves (names, labels, path): one of ENGINE_KINDS.
    engine: str = "vllm"
    ttft: float = 0.2
    itl: float = 0.02
    # Each delay varies uniformly by up to ± this fraction of itself.
    jitter: float = 0.0
    # Natural length: the end-of-sequence comes after this many tokens (unless the
    # request sets ignore_eos, which makes it generate exactly max_tokens).
    tokens: int = 64
    max_model_len: int = 4096
    # If > 0, a `: keep-alive` comment this often while waiting for the first token.
    keepalive: float = 0.0
    # The first this many generated tokens are reasoning (a reasoning model), streamed in
    # each protocol's reasoning field; chat's is `reasoning` (vLLM now) or
    # `reasoning_content` (SGLang, llama.cpp, older vLLM).
    reasoning_tokens: int = 0
    reasoning_field: str = "reasoning"
    # If > 0, every this-many-th token ends inside a multi-byte UTF-8 character, as byte
    # tokens do: vLLM then has no text for it yet. Chat sends an empty-content chunk,
    # Responses and Messages no delta at all; the next delta carries both tokens' text
    # (the captures' 9 and 12 deltas for 16 tokens).
    partial_utf8_every: int = 0
    # Per-request fault chances, drawn once per request in the order of FAULTS.
    p_http_500: float = 0.0
    p_http_429: float = 0.0
    p_error_event: float = 0.0
    p_truncate: float = 0.0
    p_reset: float = 0.0
    p_stall: float = 0.0
    p_hang: float = 0.0
    p_malformed: float = 0.0
    p_not_sse: float = 0.0
    p_oversize: float = 0.0
    # Requests that draw no fault get their whole stream in one write at the end.
    buffered: bool = False
    # How long stall and hang last if the client does not give up first.
    stall_seconds: float = 3600.0
    oversize_bytes: int = 8 * 1024 * 1024
    # Each request waits this long in the queue (num_requests_waiting) before it is
    # admitted; the first token still comes `ttft` after arrival, so prefill is the rest.
    queue: float = 0.0
    # While any request is running, /metrics answers this much later (vLLM's /metrics
    # takes up to about 2 s while it generates).
    metrics_delay: float = 0.0
    # Keep generating (and counting) the whole answer after the client has gone, as a
    # server or proxy that does not pass the disconnect on.
    ignore_disconnect: bool = False
    # Send each request's llm_request span here (vLLM's --otlp-traces-endpoint), as
    # "http/protobuf" (a .../v1/traces URL) or "grpc" (http://host:port); "" sends none.
    otlp_traces_endpoint: str = ""
    otlp_traces_protocol: str = "http/protobuf"
    # Spans go out in batches this often (the SDK's BatchSpanProcessor: every 5 s).
    otlp_traces_batch_delay: float = 5.0

    def __post_init__(self) -> None:
        for name, kind in _FIELD_KINDS.items():
            object.__setattr__(self, name, _coerce(name, kind, getattr(self, name)))
        self._check_ranges()

    @property
    def adapter_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.adapters.split(",") if name.strip())

    @property
    def served_models(self) -> tuple[str, ...]:
        """Every name a request may give as its model: the model, then its adapters."""
        return (self.model, *self.adapter_names)

    def fault_probability(self, fault: str) -> float:
        value: float = getattr(self, f"p_{fault}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_changes(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with `changes` applied; unknown keys and bad values raise ValueError."""
        unknown = sorted(set(changes) - set(_FIELD_KINDS))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; "
                f"known settings: {', '.join(_FIELD_KINDS)}"
            )
        return dataclasses.replace(self, **dict(changes))

    def _check_ranges(self) -> None:
        if not self.model.strip():
            raise ValueError("model must be a non-empty name")
        served = self.served_models
        if len(set(served)) != len(served):
            raise ValueError(f"adapters must be distinct names other than the model, got {served}")
        for name in ("ttft", "itl", "keepalive", "stall_seconds", "queue", "metrics_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(
                f"jitter must be between 0 and 1 (a fraction of each delay), got {self.jitter}"
            )
        for name in ("reasoning_tokens", "partial_utf8_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.otlp_traces_protocol not in ("http/protobuf", "grpc"):
            raise ValueError(
                "otlp_traces_protocol must be http/protobuf or grpc, "
                f"got {self.otlp_traces_protocol!r}"
            )
        if not self.otlp_traces_batch_delay > 0:
            raise ValueError(
                f"otlp_traces_batch_delay must be > 0 seconds, got {self.otlp_traces_batch_delay}"
            )
        if self.engine not in ENGINE_KINDS:
            raise ValueError(
                f"engine must be one of {', '.join(ENGINE_KINDS)}, got {self.engine!r}"
            )
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(
                f"reasoning_field must be one of {', '.join(REASONING_FIELDS)}, "
                f"got {self.reasoning_field!r}"
            )
        for name in ("tokens", "max_model_len", "oversize_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for fault in FAULTS:
            p = self.fault_probability(fault)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"p_{fault} must be a probability between 0 and 1, got {p}")
        total = sum(self.fault_probability(fault) for fault in FAULTS)
        # A single draw picks at most one fault, so the chances cannot add up to more than 1.
        if total > 1.0 + 1e-9:
            parts = ", ".join(
                f"p_{fault}={self.fault_probability(fault)}"
                for fault in FAULTS
                if self.fault_probability(fault) > 0
            )
            raise ValueError(f"fault probabilities add up to {total:g} ({parts}); at most 1")


# Field name -> declared type name ("str", "float", "int" or "bool").
_FIELD_KINDS: dict[str, str] = {
    field.name: str(field.type) for field in dataclasses.fields(SimulatorConfig)
}


def _coerce(name: str, kind: str, value: object) -> Any:
    """Check one value against its field's type; ints are accepted for seconds."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    # bool is an int subclass, but `ttft: true` is a mistake, not 1 second.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind == "int":
        if isinstance(value, int):
            return value
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if kind == "float":
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string, got {value!r}")
