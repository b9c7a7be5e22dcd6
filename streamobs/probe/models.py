"""Find the served model from ``/v1/models`` when the user did not name one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamobs.http.bodies import parse_json
from streamobs.http.client import Request, Resolver, Timeouts, fetch, system_resolver
from streamobs.http.errors import HTTPFailure, Kind, Phase
from streamobs.probe.spec import ENDPOINT_PATHS, Target
from streamobs.secret import Credential, authorization

# A model list is small; a larger body (or a decompression bomb) is not a model list.
MAX_MODELS_BYTES = 1 << 20


class ModelDiscoveryError(Exception):
    """The server did not tell us a model; the message is one human line."""


def api_path_problem(target: Target) -> str | None:
    """Why the URL's path cannot be an OpenAI-compatible API, or None.

    A URL names the server (``http://host:8000``), its API root (``.../v1``, under any
    gateway prefix) or one streaming endpoint; a path that goes on past ``/v1`` without
    naming an endpoint (``/v1/chat/completion``, ``/v1/models``) is a typo or the wrong
    URL, and probing ``<it>/v1/...`` could only fail with a 404.
    """
    parts = urlsplit(target.api_root)
    given = parts.path.removesuffix("/v1")
    segments = given.split("/")
    if "v1" not in segments or segments[-1] == "v1":
        return None
    endpoints = ", ".join(f"/v1{path}" for path in ENDPOINT_PATHS.values())
    server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return (
        f"{server}{given} is not an API path: give the server ({server}), its API root "
        f"(.../v1) or an endpoint ({endpoints})"
    )


def discover_model(
    target: Target,
    credential: Credential | None = None,
    timeout: float = 10.0,
    verify_tls: bool = True,
    resolver: Resolver = system_resolver,
) -> str:
    """The first model ``/v1/models`` lists."""
    return str(list_models(target, credential, timeout, verify_tls, resolver)[0]["id"])


def list_models(
    target: Target,
    credential: Credential | None = None,
    timeout: float = 10.0,
    verify_tls: bool = True,
    resolver: Resolver = system_resolver,
) -> list[dict[str, Any]]:
    """The entries of ``/v1/models`` that name a model (vLLM adds ``max_model_len``),
    asked with ``credential`` (an API key or basic auth) as the probes are. ``timeout``
    bounds the whole exchange, connect to the last byte of the body."""
    problem = api_path_problem(target)
    if problem is not None:
        raise ModelDiscoveryError(problem)
    headers = {"Accept": "application/json", "User-Agent": "streamobs-probe"}
    if credential is not None:
        headers["Authorization"] = authorization(credential)
    url = target.models_url
    try:
        response, body = fetch(
            Request("GET", url, headers),
            Timeouts(connect=timeout, headers=timeout, total=timeout),
            max_bytes=MAX_MODELS_BYTES,
            verify_tls=verify_tls,
            resolver=resolver,
        )
    except HTTPFailure as failure:
        raise ModelDiscoveryError(_failure_text(url, failure, timeout)) from None
    if response.status in (401, 403):
        raise ModelDiscoveryError(
            f"{url} refused the request (HTTP {response.status}): "
            "check the credentials (API key or basic auth), or name the model with --model"
        )
    try:
        payload = parse_json(body) if response.status == 200 else None
    except ValueError:
        payload = None
    data = payload.get("data") if isinstance(payload, dict) else None
    models = [
        item
        for item in (data if isinstance(data, list) else [])
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]
    if not models:
        content_type = response.content_type or "missing"
        raise ModelDiscoveryError(
            f"{url} did not answer like an OpenAI-compatible server "
            f"(HTTP {response.status}, Content-Type {content_type}); "
            "check the URL, or name the model with --model"
        )
    return models


def _failure_text(url: str, failure: HTTPFailure, timeout: float) -> str:
    """One line that names the cause: DNS, the TCP connection, TLS (with the library's
    reason), a timeout of which phase, or what the server sent."""
    if failure.phase is Phase.DNS:
        if failure.kind is Kind.TIMEOUT:
            return f"DNS lookup for {url} did not finish within {timeout:g} s"
        return f"DNS lookup for {url} failed: {failure.message}"
    if failure.kind is Kind.TIMEOUT:
        return f"{url} did not answer within {timeout:g} s ({failure.phase.value} timed out)"
    if failure.phase is Phase.TLS or failure.kind is Kind.TLS:
        reason = failure.message
        for prefix in ("TLS handshake failed: ", "TLS error: "):
            reason = reason.removeprefix(prefix)
        return f"TLS handshake with {url} failed: {reason}"
    if failure.phase is Phase.CONNECT:
        return f"cannot connect to {url}: {failure.message}"
    if failure.kind is Kind.TOO_LARGE:
        return f"{url} sent a model list larger than {MAX_MODELS_BYTES} bytes"
    return f"{url} did not answer like an OpenAI-compatible server: {failure.message}"
