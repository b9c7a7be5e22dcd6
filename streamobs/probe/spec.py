"""What one probe sends, and where: validated once, immutable afterwards."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from streamobs.http.client import Resolver, require_seconds, system_resolver
from streamobs.probe.protocol import (
    PROTOCOLS,
    Protocol,
    RequestShape,
    auth_headers,
    protocol_headers,
    request_body,
)
from streamobs.secret import BasicAuth, Credential, Secret, credential_secrets

Endpoint = Literal["chat", "completions", "responses", "messages"]
ENDPOINTS: tuple[str, ...] = tuple(PROTOCOLS)
ENDPOINT_PATHS: dict[str, str] = {name: p.path for name, p in PROTOCOLS.items()}

DEFAULT_PROMPT = (
    "Count upwards from one, writing each number as an English word, separated by spaces."
)
# What the OpenAI Python SDK (httpx) and requests send: the probe must see the path the way
# users do, including a proxy that compresses event streams.
DEFAULT_ACCEPT_ENCODING = "gzip, deflate"


class TargetError(ValueError):
    """A target URL or probe setting that cannot work; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """An OpenAI-compatible API root (``.../v1``) split from whatever the user typed."""

    api_root: str
    endpoint: Endpoint

    @property
    def request_url(self) -> str:
        return self.api_root + ENDPOINT_PATHS[self.endpoint]

    @property
    def protocol(self) -> Protocol:
        return PROTOCOLS[self.endpoint]

    @property
    def models_url(self) -> str:
        return self.api_root + "/models"

    @property
    def host(self) -> str:
        return urlsplit(self.api_root).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.api_root)
        return parts.port or (443 if parts.scheme == "https" else 80)


def parse_target(url: str, endpoint: str | None = None) -> Target:
    """Accept ``http://host:8000``, ``.../v1``, or a full endpoint URL
    (``.../v1/chat/completions``, ``/completions``, ``/responses``, ``/messages``).

    A full endpoint URL decides the endpoint kind itself; otherwise ``endpoint`` does
    (default chat). Credentials in the URL are refused: they would end up in labels.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"bad URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise TargetError(f"bad URL {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise TargetError(
            "bad URL: credentials in the URL are not accepted (they would end up in labels); "
            "use basic auth with a password file or variable, or an API key"
        )
    if parts.query or parts.fragment:
        raise TargetError(f"bad URL {url!r}: query strings and fragments are not supported")
    del port
    path = parts.path.rstrip("/")
    found: str | None = None
    for kind, suffix in ENDPOINT_PATHS.items():
        if path.endswith(suffix) and (kind != "completions" or not path.endswith("/chat" + suffix)):
            found = kind
            path = path[: -len(suffix)]
            break
    if found and endpoint and endpoint != found:
        raise TargetError(f"the URL names the {found} endpoint but --endpoint says {endpoint}")
    kind = found or endpoint or "chat"
    if kind not in ENDPOINT_PATHS:
        raise TargetError(f"unknown endpoint kind {kind!r}: use {', '.join(ENDPOINTS)}")
    if not path.endswith("/v1"):
        path += "/v1"
    root = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return Target(api_root=root, endpoint=kind)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``headers`` counts from the request being sent; ``first_token`` and
    ``total`` count from the start of the probe."""

    connect: float = 5.0
    headers: float = 30.0
    first_token: float = 30.0
    total: float = 120.0

    def __post_init__(self) -> None:
        require_seconds(self, ("connect", "headers", "first_token", "total"), TargetError)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    target: Target
    model: str
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 64
    ignore_eos: bool = True  # vLLM extension: a stable token count per probe
    timeouts: Timeouts = field(default_factory=Timeouts)
    api_key: Secret | None = None  # sent as a bearer token
    basic_auth: BasicAuth | None = None  # or this: one Authorization header
    # Extra request headers may carry credentials too: repr shows only their names.
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    accept_encoding: str = DEFAULT_ACCEPT_ENCODING
    verify_tls: bool = True
    max_line_bytes: int = 1 << 20
    max_event_bytes: int = 4 << 20
    # Events per probe: past it the stream is too_large (memory stays bounded).
    max_events: int = 100_000
    # Ask for a call of one fixed function (chat, responses, messages), so the tool-call
    # path is what is probed and timed.
    tool_call: bool = False
    # Name resolution; tests substitute one that never answers.
    resolver: Resolver = field(default=system_resolver, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.model:
            raise TargetError("a model name is required")
        if self.api_key is not None and self.basic_auth is not None:
            raise TargetError(
                "an API key and basic auth cannot both be sent: there is one Authorization header"
            )
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise TargetError("max_tokens must be a positive integer")
        if self.tool_call and not self.target.protocol.tools:
            raise TargetError(
                f"the {self.target.endpoint} endpoint has no tool calls: "
                "use chat, responses or messages"
            )
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def request_json(self) -> dict[str, Any]:
        shape = RequestShape(
            self.model, self.prompt, self.max_tokens, self.ignore_eos, self.tool_call
        )
        return request_body(self.target.endpoint, shape)

    def request_body(self) -> bytes:
        return json.dumps(self.request_json()).encode()

    def request_headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": self.accept_encoding,
            "User-Agent": "streamobs-probe",
            **protocol_headers(self.target.endpoint),
        }
        headers.update(self.headers)
        if self.credential is not None:
            headers.update(auth_headers(self.target.endpoint, self.credential))
        return headers

    @property
    def credential(self) -> Credential | None:
        """What the ``Authorization`` header carries: the API key or basic auth, if any."""
        return self.api_key if self.api_key is not None else self.basic_auth

    def secrets(self) -> tuple[Secret | str, ...]:
        """Every value this probe sends that text it prints must not show: the credential
        (basic auth: the password and its base64 token) and every extra header's value."""
        return (*credential_secrets(self.credential), *self.headers.values())
