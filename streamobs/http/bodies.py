"""Reading what servers put in bodies: JSON that cannot exhaust the stack, error messages."""

from __future__ import annotations

import json
from typing import Any


def parse_json(data: bytes | str) -> Any:
    """``json.loads`` that fails with ValueError for anything it cannot take, including
    nesting deep enough to exhaust the interpreter's stack."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None


def error_detail(body: bytes) -> str | None:
    """The message of an OpenAI- or Anthropic-style JSON error body (or FastAPI's
    ``detail``), else None."""
    try:
        parsed = parse_json(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    for key in ("detail", "message"):
        if parsed.get(key):
            return str(parsed[key])
    return None


def first_line(body: bytes) -> str:
    """The first non-empty line of a body that is not JSON, for an error message (whole:
    callers mask secrets before they shorten it)."""
    text = body.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0] if text else ""
