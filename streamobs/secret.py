"""Values that must never reach logs, labels, ``repr`` or status pages: the wrapper, the
one redaction helper for text that may hold them, and loading them safely."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

MASK = "***"
# Headers whose values are credentials wherever they appear in text a server sent back.
CREDENTIAL_HEADERS = (
    "proxy-authorization",
    "authorization",
    "x-api-key",
    "api-key",
    "set-cookie",
    "cookie",
)
_NAMES = "|".join(re.escape(n) for n in CREDENTIAL_HEADERS)
# "authorization": "Bearer x"   'api-key': 'x'   \"cookie\": \"x\"  (JSON, repr, escaped JSON)
_QUOTED = re.compile(
    rf"(?i)(?P<q>\\*[\"'])(?P<name>{_NAMES})(?P=q)(?P<sep>\s*[:=]\s*)(?P<vq>\\*[\"'])"
    r"(?P<value>.*?)(?P=vq)"
)
# Authorization: Bearer x  (a header line: everything to the end of the line)
_LINE = re.compile(rf"(?im)\b(?P<name>{_NAMES})(?P<sep>[ \t]*:[ \t]*)(?P<value>[^\r\n]+)")
# api-key=x  (query strings, forms)
_PARAM = re.compile(rf"(?i)\b(?P<name>{_NAMES})=(?P<value>[^&\s\"']+)")
# Bearer x, Basic x: a credential whatever header or field carries it
_SCHEME = re.compile(r"(?i)\b(?P<name>Bearer|Basic)(?P<sep>\s+)[A-Za-z0-9._~+/=-]{4,}")


class Secret:
    """Wraps a credential. Only ``reveal()`` gives the value back, so accidental
    formatting (f-strings, ``repr`` in tracebacks, dataclass reprs) prints a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``redact(text, [self])``: this value and usual credential headers masked."""
        return redact(text, [self])

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def redact(
    text: str,
    secrets: Iterable[Secret | str | None] = (),
    max_length: int | None = None,
) -> str:
    """``text`` (e.g. what a server sent back) made safe to print.

    Masks every occurrence of each secret value (also JSON-escaped and percent-encoded),
    then the values of the usual credential headers (``Authorization``, ``api-key``,
    ``x-api-key``, ``Cookie``, ``Proxy-Authorization``) and ``Bearer``/``Basic``
    credentials wherever they appear, and only then shortens the result to ``max_length``
    characters, so no prefix of a secret can survive a cut. Pass every configured secret:
    the API key, basic-auth passwords, secret header values.
    """
    values: set[str] = set()
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            values.update((value, json.dumps(value)[1:-1], quote(value, safe="")))
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _QUOTED.sub(lambda m: f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{MASK}{m['vq']}",
                       text)  # fmt: skip
    text = _LINE.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    text = _PARAM.sub(lambda m: m["name"] + "=" + MASK, text)
    text = _SCHEME.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    if max_length is not None and len(text) > max_length:
        text = text[: max(max_length - 1, 0)] + "…"
    return text


class SecretError(ValueError):
    """A credential source is set but unusable; the message never holds the value."""


def load_api_key(env_var: str | None, file_path: str | None) -> Secret | None:
    """Bearer token from an environment variable or a file (one of them, or neither)."""
    if env_var and file_path:
        raise SecretError("set either an API key environment variable or an API key file, not both")
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise SecretError(f"API key environment variable {env_var} is not set")
        value = value.strip()
        if not value:
            raise SecretError(f"API key environment variable {env_var} is empty")
        return Secret(value)
    if file_path:
        try:
            value = Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read API key file {file_path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretError(f"API key file {file_path} is not UTF-8 text") from None
        if not value:
            raise SecretError(f"API key file {file_path} is empty")
        if "\n" in value or "\r" in value:
            raise SecretError(f"API key file {file_path} holds more than one line")
        return Secret(value)
    return None
