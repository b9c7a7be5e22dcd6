"""Is a request cross-site? For endpoints a web page must not be able to trigger.

A browser marks every request it makes: ``Sec-Fetch-Site`` (all current browsers) and, on
a POST, ``Origin``. A page on another site that posts a form to ``/-/reload`` carries
``Sec-Fetch-Site: cross-site`` and a foreign ``Origin``. Tools such as curl or Prometheus
send neither header, so they are never refused.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


_SAME = {"same-origin", "none"}  # "none": typed into the address bar, a bookmark


def cross_site(headers: Headers, tls: bool) -> str | None:
    """Why the request comes from another site, or None when it does not."""
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in _SAME:
        return f"Sec-Fetch-Site is {fetch_site.strip()[:20]!r}"
    origin = headers.get("Origin")
    if origin is None:
        return None
    host = (headers.get("Host") or "").strip()
    claimed = _authority(origin)
    if claimed is None or claimed != _authority(("https://" if tls else "http://") + host):
        return "the Origin header names another site"
    return None


def _authority(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme
    if scheme not in ("http", "https") or not parts.hostname:
        return None  # includes Origin: null (sandboxed frames, file: pages)
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)
