"""Values that must never reach logs, labels, ``repr`` or status pages: the wrapper, the
one redaction helper for text that may hold them, and loading them safely."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote

from streamobs.files import KIB, FileRefused, read_limited

MASK = "***"
MAX_SECRET_CHARS = 16 * KIB  # far above any real token (JWTs are a few KiB)
MAX_SECRET_FILE_BYTES = MAX_SECRET_CHARS + KIB  # room for surrounding whitespace
MAX_USERNAME_CHARS = 256
# Headers whose values are credentials wherever they appear in text a server sent back.
CREDENTIAL_HEADERS = (
    "proxy-authorization",
    "authorization",
    "x-api-key",
    "api-key",
    "set-cookie",
    "cookie",
)
# Header names that suggest a credential (X-Auth-Token, X-Goog-Api-Key, Session-Id, ...).
_CREDENTIAL_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "cookie",
    "session",
    "credential",
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
# Bearer x, Basic x: a credential whatever header or field carries it; not the word of
# prose or of a WWW-Authenticate challenge after it ("basic auth", "Basic realm=...").
_PROSE = (
    r"(?:(?:auth|authentication|authorization|token|tokens|credentials?|scheme|access)"
    r"(?![A-Za-z0-9_~+/=-])|realm=)"
)
_SCHEME = re.compile(
    rf"(?i)\b(?P<name>Bearer|Basic)(?P<sep>\s+)(?!{_PROSE})[A-Za-z0-9._~+/=-]{{4,}}"
)


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


def is_credential_header(name: str) -> bool:
    """Whether a header's value should be treated as a secret (redacted, never shown)."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(word in lowered for word in _CREDENTIAL_WORDS)


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
    ordered = sorted(values, key=len, reverse=True)
    for value in ordered:
        text = text.replace(value, MASK)
    text = _mask_cut_tail(text, ordered)
    text = _QUOTED.sub(lambda m: f"{m['q']}{m['name']}{m['q']}{m['sep']}{m['vq']}{MASK}{m['vq']}",
                       text)  # fmt: skip
    text = _LINE.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    text = _PARAM.sub(lambda m: m["name"] + "=" + MASK, text)
    text = _SCHEME.sub(lambda m: m["name"] + m["sep"] + MASK, text)
    if max_length is not None and len(text) > max_length:
        text = text[: max(max_length - 1, 0)] + "…"
    return text


def _mask_cut_tail(text: str, values: Iterable[str]) -> str:
    """Text someone else already cut may end in the first characters of a secret (the
    full value is gone, so replacing it found nothing): mask such a tail too."""
    body = text.rstrip(".…")
    marker = text[len(body) :]
    for value in values:
        if len(value) < 5:
            continue
        start = body.find(value[:4], max(0, len(body) - len(value) + 1))
        while start != -1:
            if value.startswith(body[start:]):
                return body[:start] + MASK + marker
            start = body.find(value[:4], start + 1)
    return text


class SecretError(ValueError):
    """A credential source is set but unusable; the message never holds the value."""


def check_secret(value: str, source: str) -> str:
    """``value`` with surrounding whitespace removed, if it can be sent in an HTTP header;
    SecretError naming ``source`` (never the value) otherwise."""
    value = value.strip()
    if not value:
        raise SecretError(f"{source} is empty")
    if len(value) > MAX_SECRET_CHARS:
        raise SecretError(f"{source} is longer than {MAX_SECRET_CHARS} characters")
    if "\n" in value or "\r" in value:
        raise SecretError(f"{source} holds a line break (more than one line)")
    if "\0" in value:
        raise SecretError(f"{source} holds a NUL character")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise SecretError(f"{source} holds control characters")
    if not value.isascii():
        raise SecretError(f"{source} holds non-ASCII characters, which an HTTP header cannot carry")
    return value


def load_secret(env_var: str | None, file_path: str | None, what: str) -> Secret | None:
    """A credential from an environment variable or a file (one of them, or neither),
    checked by ``check_secret``; ``what`` names it in errors ("API key")."""
    if env_var and file_path:
        raise SecretError(f"{what}: set either an environment variable or a file, not both")
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise SecretError(f"{what} environment variable {env_var} is not set")
        return Secret(check_secret(value, f"{what} environment variable {env_var}"))
    if file_path:
        try:
            raw = read_limited(file_path, MAX_SECRET_FILE_BYTES, f"{what} file")
        except FileRefused as exc:
            raise SecretError(str(exc)) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"{what} file {file_path} is not UTF-8 text") from None
        return Secret(check_secret(text, f"{what} file {file_path}"))
    return None


def load_api_key(env_var: str | None, file_path: str | None) -> Secret | None:
    """Bearer token from an environment variable or a file (one of them, or neither)."""
    return load_secret(env_var, file_path, "API key")


def check_username(value: str, source: str) -> str:
    """``value`` if it can be the user name of HTTP basic auth (RFC 7617: no ``:``, which
    separates it from the password); SecretError naming ``source`` (never the value)."""
    if not value:
        raise SecretError(f"{source} is empty")
    if len(value) > MAX_USERNAME_CHARS:
        raise SecretError(f"{source} is longer than {MAX_USERNAME_CHARS} characters")
    if ":" in value:
        raise SecretError(f"{source} holds ':', which separates the user name from the password")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise SecretError(f"{source} holds control characters (CR, LF, NUL, ...)")
    if not value.isascii():
        raise SecretError(f"{source} holds non-ASCII characters, which an HTTP header cannot carry")
    if value != value.strip():
        raise SecretError(f"{source} starts or ends with whitespace")
    return value


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP basic auth: a user name (shown, e.g. in ``repr``) and a password (a Secret).
    The ``Authorization`` token made of both is a secret too: ``secrets()`` gives both to
    ``redact``, so neither the password nor its base64 form is ever printed."""

    username: str
    password: Secret

    def __post_init__(self) -> None:
        check_username(self.username, "basic-auth user name")
        check_secret(self.password.reveal(), "basic-auth password")

    @property
    def token(self) -> Secret:
        """``base64(user:password)``, what ``Authorization: Basic`` carries."""
        raw = f"{self.username}:{self.password.reveal()}".encode("ascii")
        return Secret(base64.b64encode(raw).decode("ascii"))

    def authorization(self) -> str:
        """The ``Authorization`` header's value."""
        return "Basic " + self.token.reveal()

    def secrets(self) -> tuple[Secret, Secret]:
        return (self.password, self.token)


# What one Authorization header carries: an API key (a bearer token) or basic auth.
Credential: TypeAlias = Secret | BasicAuth


def authorization(credential: Credential) -> str:
    """The ``Authorization`` header's value for ``credential``."""
    if isinstance(credential, BasicAuth):
        return credential.authorization()
    return "Bearer " + credential.reveal()


def credential_secrets(credential: Credential | None) -> tuple[Secret, ...]:
    """The values ``redact`` must mask for ``credential`` (none for None)."""
    if credential is None:
        return ()
    return credential.secrets() if isinstance(credential, BasicAuth) else (credential,)
