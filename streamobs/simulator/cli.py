"""`streamobs simulate`: its flags (each also a STREAMOBS_SIM_* variable) and serving loop."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.engines import ENGINE_KINDS
from streamobs.simulator.server import Simulator

PROG = "streamobs simulate"
ENV_PREFIX = "STREAMOBS_SIM_"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class _Option:
    name: str  # the flag without "--"; dest and env name derive from it
    kind: str  # "str", "int", "float" or "bool"
    help: str

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


# What each fault does, for the help text; one entry per name in FAULTS.
FAULT_HELP: dict[str, str] = {
    "http_500": "HTTP 500 with a JSON error body",
    "http_429": "HTTP 429 with a JSON error body and retry-after",
    "error_event": "vLLM's engine-dead error event halfway (chat: then [DONE])",
    "truncate": "a clean end of body halfway, without finish_reason or the terminal event",
    "reset": "a TCP reset halfway through the stream",
    "stall": "headers and the opening events (chat: the role chunk), then silence",
    "hang": "no answer at all, not even headers",
    "malformed": "one event with broken JSON halfway",
    "not_sse": "one JSON body although it asked for a stream",
    "oversize": "a data: line of --oversize-bytes that never ends, halfway",
}

_DEFAULTS = SimulatorConfig()
_OPTIONS: tuple[_Option, ...] = (
    _Option("host", "str", "address to listen on (default 127.0.0.1)"),
    _Option("port", "int", "port to listen on; 0 picks a free one (default 8000)"),
    _Option("model", "str", f"served model name (default {_DEFAULTS.model})"),
    _Option(
        "adapters",
        "str",
        "LoRA adapters served beside the model, comma-separated (listed in /v1/models)",
    ),
    _Option(
        "engine",
        "str",
        f"whose /metrics to serve: {', '.join(ENGINE_KINDS)} (default {_DEFAULTS.engine})",
    ),
    _Option("ttft", "float", f"seconds to the first token (default {_DEFAULTS.ttft:g})"),
    _Option("itl", "float", f"seconds between tokens (default {_DEFAULTS.itl:g})"),
    _Option("jitter", "float", "random ± fraction applied to each delay, 0..1 (default 0)"),
    _Option("tokens", "int", f"tokens before end-of-sequence (default {_DEFAULTS.tokens})"),
    _Option("max-model-len", "int", f"context length (default {_DEFAULTS.max_model_len})"),
    _Option("keepalive", "float", "send `: keep-alive` comments this often before the first token"),
    _Option(
        "reasoning-tokens", "int", "the first N tokens are reasoning, in each protocol's field"
    ),
    _Option(
        "partial-utf8-every",
        "int",
        "every Nth token ends inside a UTF-8 character: its text rides on the next delta",
    ),
    _Option(
        "reasoning-field",
        "str",
        "chat's reasoning field: reasoning (vLLM now) or reasoning_content (default reasoning)",
    ),
    *(
        _Option(f"p-{fault.replace('_', '-')}", "float", f"chance that a request gets: {what}")
        for fault, what in FAULT_HELP.items()
    ),
    _Option("buffered", "bool", "deliver each whole stream in one write, as a buffering proxy"),
    _Option("stall-seconds", "float", "how long stall and hang faults last (default 3600)"),
    _Option("oversize-bytes", "int", "length of the oversize fault's line (default 8 MiB)"),
    _Option("queue", "float", "seconds each request waits in the queue, within --ttft (default 0)"),
    _Option("metrics-delay", "float", "/metrics answers this much later while generating"),
    _Option("ignore-disconnect", "bool", "keep generating for a client that has gone (a fault)"),
    _Option(
        "otlp-traces-endpoint",
        "str",
        "send each request's llm_request span here, as vLLM's --otlp-traces-endpoint "
        "(http/protobuf: http://host:4318/v1/traces; grpc: http://host:4317)",
    ),
    _Option("otlp-traces-protocol", "str", "http/protobuf (default) or grpc"),
    _Option(
        "otlp-traces-batch-delay", "float", "seconds between span batches (default 5, the SDK's)"
    ),
    _Option("seed", "int", "seed for the fault draws and jitter, for reproducible runs"),
)
_NOT_CONFIG = frozenset({"host", "port", "seed"})
_FALLBACKS: dict[str, Any] = {"host": "127.0.0.1", "port": 8000, "seed": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; an absent flag falls back to its environment variable."""
    for option in _OPTIONS:
        help_text = f"{option.help} [env {option.env}]"
        if option.kind == "bool":
            parser.add_argument(
                f"--{option.name}", action="store_true", default=None, help=help_text
            )
        else:
            # Values are converted in run(), so flags and variables fail the same way.
            metavar = {"str": "TEXT", "int": "N", "float": "X"}[option.kind]
            parser.add_argument(f"--{option.name}", default=None, metavar=metavar, help=help_text)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM. Returns 0, 1 if the port is unusable, 2 on bad values."""
    try:
        settings = resolve_settings(vars(args), os.environ)
        config = SimulatorConfig(
            **{name: value for name, value in settings.items() if name not in _NOT_CONFIG}
        )
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    host, port = settings["host"], settings["port"]
    try:
        simulator = Simulator(config, host=host, port=port, seed=settings["seed"])
    except OSError as error:
        reason = error.strerror or str(error)
        print(f"{PROG}: error: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1

    stop_requested = threading.Event()
    previous = _on_stop_signals(stop_requested)
    try:
        simulator.start()
        print(
            f"{PROG}: serving {config.model} at {simulator.url} as {config.engine} "
            f"(ttft {config.ttft:g} s, itl {config.itl:g} s); stop with Ctrl-C",
            flush=True,
        )
        stop_requested.wait()
    finally:
        simulator.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def resolve_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Typed settings: each flag, else its STREAMOBS_SIM_* variable, else left out.

    Config fields left out take the config's defaults; host, port and seed get theirs
    here. A bad value raises ValueError naming the flag or variable it came from.
    """
    settings: dict[str, Any] = dict(_FALLBACKS)
    for option in _OPTIONS:
        raw = flags.get(option.dest)
        source = f"--{option.name}"
        if raw is None and option.env in environ:
            raw, source = environ[option.env], option.env
        if raw is None:
            continue
        settings[option.dest] = _convert(option, raw, source)
    if not 0 <= settings["port"] <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {settings['port']}")
    return settings


def _convert(option: _Option, raw: Any, source: str) -> Any:
    if option.kind == "bool":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ValueError(f"{source}: expected true or false, got {raw!r}")
    text = str(raw).strip()
    try:
        if option.kind == "int":
            return int(text)
        if option.kind == "float":
            return float(text)
    except ValueError:
        expected = "an integer" if option.kind == "int" else "a number"
        raise ValueError(f"{source}: expected {expected}, got {raw!r}") from None
    return text


def _on_stop_signals(stop_requested: threading.Event) -> dict[int, Any]:
    """Make SIGINT and SIGTERM set `stop_requested`; returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may install signal handlers

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    return {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }
