"""Find the served model from ``/v1/models`` when the user did not name one."""

from __future__ import annotations

from typing import Any

import requests

from streamobs.probe.spec import Target
from streamobs.probe.transport import new_session
from streamobs.secret import Secret


class ModelDiscoveryError(Exception):
    """The server did not tell us a model; the message is one human line."""


def discover_model(
    target: Target,
    api_key: Secret | None = None,
    timeout: float = 10.0,
    verify_tls: bool = True,
) -> str:
    """The first model ``/v1/models`` lists."""
    return str(list_models(target, api_key, timeout, verify_tls)[0]["id"])


def list_models(
    target: Target,
    api_key: Secret | None = None,
    timeout: float = 10.0,
    verify_tls: bool = True,
) -> list[dict[str, Any]]:
    """The entries of ``/v1/models`` that name a model (vLLM adds ``max_model_len``)."""
    headers = {"Accept": "application/json", "User-Agent": "streamobs-probe"}
    if api_key is not None:
        headers["Authorization"] = "Bearer " + api_key.reveal()
    url = target.models_url
    with new_session(verify_tls) as session:
        try:
            response = session.get(url, headers=headers, timeout=timeout, allow_redirects=False)
        except requests.exceptions.SSLError:
            raise ModelDiscoveryError(f"TLS handshake with {url} failed") from None
        except requests.exceptions.Timeout:
            raise ModelDiscoveryError(f"{url} did not answer within {timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise ModelDiscoveryError(f"cannot connect to {url}") from None
        with response:
            if response.status_code in (401, 403):
                raise ModelDiscoveryError(
                    f"{url} refused the request (HTTP {response.status_code}): "
                    "check the API key, or name the model with --model"
                )
            content_type = response.headers.get("Content-Type", "missing")
            try:
                payload = response.json() if response.status_code == 200 else None
            except ValueError:
                payload = None
            data = payload.get("data") if isinstance(payload, dict) else None
            models = [
                item
                for item in data or []
                if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
            ]
            if not models:
                raise ModelDiscoveryError(
                    f"{url} did not answer like an OpenAI-compatible server "
                    f"(HTTP {response.status_code}, Content-Type {content_type}); "
                    "check the URL, or name the model with --model"
                )
            return models
