"""Fetching a ``/metrics`` page within a hard time budget and a size bound.

``requests`` timeouts bound each socket operation, not the whole exchange: a server that
trickles one byte per second keeps a scrape alive forever. A timer shuts the socket down
when the budget runs out, which wakes the blocked read wherever it is (status line,
headers or body). The connection classes of ``new_vllm_session()`` hand their socket to
that timer; with any other session the budget is still checked between reads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Ask for the classic text format (not OpenMetrics) without compression: on a sidecar
# link gzip only costs CPU on both ends, and the size bound then counts wire bytes.
_REQUEST_HEADERS = {
    "Accept": "text/plain;version=0.0.4;q=1.0,*/*;q=0.1",
    "Accept-Encoding": "identity",
    "User-Agent": "streamobs-vllm-collector",
}
_CHUNK_BYTES = 64 * 1024


class ScrapeError(Exception):
    """A scrape that produced no usable metrics; the message is one line for humans."""


class Deadline:
    """An overall time budget for one request, enforced by shutting its socket down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end_ns = time.perf_counter_ns() + int(seconds * 1e9)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._expired = False
        self._finished = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token: Token[Deadline | None] | None = None

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def remaining(self) -> float:
        return (self._end_ns - time.perf_counter_ns()) / 1e9

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            expired = self._expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def __enter__(self) -> Deadline:
        self._token = _active_deadline.set(self)
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        with self._lock:
            # A pooled connection may serve the next scrape: never shut it down later.
            self._finished = True
            self._sock = None
        if self._token is not None:
            _active_deadline.reset(self._token)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_active_deadline: ContextVar[Deadline | None] = ContextVar("streamobs_vllm_deadline", default=None)


def _watch_connection(connection: HTTPConnection) -> None:
    deadline = _active_deadline.get()
    if deadline is not None and connection.sock is not None:
        deadline.watch(connection.sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:
        # The request is sent; from here on every wait is for the server.
        _watch_connection(self)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        _watch_connection(self)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


def new_vllm_session() -> requests.Session:
    """A session for repeated scrapes (keeps the connection alive between them): no
    retries, few redirects, and no proxy, netrc or CA settings taken from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = 3
    adapter = _WatchedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_metrics_text(
    url: str, *, deadline: Deadline, max_bytes: int, session: requests.Session
) -> str:
    """The body of a 200 text/plain response, decoded; raises ScrapeError otherwise."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise ScrapeError(_timed_out(deadline))
    response = session.get(
        url, headers=_REQUEST_HEADERS, stream=True, timeout=(remaining, remaining)
    )
    try:
        _check_response(response, max_bytes)
        body = _read_body(response, deadline, max_bytes)
    finally:
        response.close()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"body is not UTF-8 text (byte {exc.start})") from None


def _check_response(response: requests.Response, max_bytes: int) -> None:
    if response.status_code != 200:
        raise ScrapeError(f"HTTP {response.status_code} {response.reason or ''}".rstrip())
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    # Some minimal servers send no Content-Type; the parser then decides.
    if media_type and media_type != "text/plain":
        raise ScrapeError(f"unexpected content type {media_type!r}, expected text/plain")
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    if declared.isdigit() and not encoded and int(declared) > max_bytes:
        raise ScrapeError(_too_large(max_bytes))


def _read_body(response: requests.Response, deadline: Deadline, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise ScrapeError(_too_large(max_bytes))
        chunks.append(chunk)
        if deadline.expired:
            break
    # A body cut short by the deadline can look complete (no Content-Length): never
    # trust what was read once the budget ran out.
    if deadline.expired:
        raise ScrapeError(_timed_out(deadline))
    return b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return f"response larger than {max_bytes} bytes"


def _timed_out(deadline: Deadline) -> str:
    return f"no complete response within {deadline.seconds:g} s"


def describe_request_error(exc: BaseException, deadline: Deadline) -> str:
    """One line naming what went wrong, without requests' nested wrapper text."""
    if deadline.expired or isinstance(exc, requests.Timeout):
        return _timed_out(deadline)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return "invalid URL"
    if isinstance(exc, requests.exceptions.InvalidSchema):
        return "unsupported URL scheme"
    root = _root_os_error(exc)
    if isinstance(exc, requests.ConnectionError) and root is not None:
        return f"connection failed: {root}"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        return "connection closed before the response was complete"
    return f"request failed: {type(exc).__name__}"


def _root_os_error(exc: BaseException) -> str | None:
    """The innermost OS-level reason (refused, reset, unreachable, name not known)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__
        if current is None and isinstance(reason, BaseException):
            current = reason
    return found
