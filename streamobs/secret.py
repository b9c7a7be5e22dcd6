"""A value that must never reach logs, labels, ``repr`` or status pages."""

from __future__ import annotations

import os
from pathlib import Path


class Secret:
    """Wraps a credential. Only ``reveal()`` gives the value back, so accidental
    formatting (f-strings, ``repr`` in tracebacks, dataclass reprs) prints a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """Remove any occurrence of the value from ``text`` (for error messages)."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


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
