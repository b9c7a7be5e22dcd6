"""Fetching a ``/metrics`` page on the one HTTP stack (``streamobs.http``): one exchange
per scrape, one deadline for all of it (connect to the last byte, whatever the server
trickles), and a bound on the decoded body."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit

from streamobs.http.client import Request, Timeouts, fetch
from streamobs.http.errors import HTTPFailure, Kind, Phase

# Ask for the classic text format (not OpenMetrics) without compression: on a sidecar
# link gzip only costs CPU on both ends, and the size bound then counts wire bytes.
_REQUEST_HEADERS = {
    "Accept": "text/plain;version=0.0.4;q=1.0,*/*;q=0.1",
    "Accept-Encoding": "identity",
    "User-Agent": "streamobs-engine-collector",
}


class ScrapeError(Exception):
    """A scrape that produced no usable metrics; the message is one line for humans."""


def fetch_metrics_text(url: str, *, timeout: float, max_bytes: int) -> str:
    """The body of a 200 text/plain response, decoded; raises ScrapeError otherwise.
    Credentials in the URL (``http://user:pass@host/metrics``) go as basic auth."""
    request = _request(url)
    try:
        response, body = fetch(
            request, Timeouts(connect=timeout, headers=timeout, total=timeout), max_bytes=max_bytes
        )
    except HTTPFailure as failure:
        raise ScrapeError(_describe(failure, timeout, max_bytes)) from None
    if response.status != 200:
        raise ScrapeError(f"HTTP {response.status} {response.reason}".rstrip())
    # Some minimal servers send no Content-Type; the parser then decides.
    if response.media_type and response.media_type != "text/plain":
        raise ScrapeError(
            f"unexpected content type {response.media_type[:60]!r}, expected text/plain"
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"body is not UTF-8 text (byte {exc.start})") from None


def _request(url: str) -> Request:
    parts = urlsplit(url)
    headers = dict(_REQUEST_HEADERS)
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScrapeError("invalid URL")
    return Request("GET", url, headers)


def _describe(failure: HTTPFailure, timeout: float, max_bytes: int) -> str:
    if failure.kind is Kind.TIMEOUT:
        return f"no complete response within {timeout:g} s"
    if failure.kind is Kind.TOO_LARGE and failure.phase is Phase.BODY:
        return f"response larger than {max_bytes} bytes"
    if failure.phase is Phase.TLS:
        return f"TLS handshake failed: {failure.message}"
    if failure.phase in (Phase.DNS, Phase.CONNECT):
        return f"connection failed: {failure.message}"
    if failure.kind is Kind.CLOSED:
        return "connection closed before the response was complete"
    return failure.message
