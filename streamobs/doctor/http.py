"""Requests the prober does not make: ones the doctor abandons on purpose, non-streamed
ones, and ones whose response headers it inspects. Plain http.client: sending a request
and reading its response are separate steps, and closing the socket is explicit."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlsplit

from streamobs.probe.chunks import MalformedChunk, interpret
from streamobs.probe.spec import ProbeSpec
from streamobs.sse import SSEDecoder, SSETooLarge

ERROR_BODY_LIMIT = 64 * 1024
READ_LIMIT = 64 * 1024


class Exchange:
    """One request on a connection of its own; ``close()`` (or leaving the ``with``)
    closes the socket, which is what a client that gives up does."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.path = parts.path or "/"
        host = parts.hostname or ""
        self.timeout = timeout
        self.conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context()
            self.conn = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=context
            )
        else:
            self.conn = http.client.HTTPConnection(host, parts.port, timeout)
        self.started = time.monotonic()
        self._response: http.client.HTTPResponse | None = None

    def send(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Connect and send a POST without waiting for the answer."""
        self.started = time.monotonic()
        self.conn.request("POST", self.path, body=body, headers=dict(headers))

    def response(self) -> http.client.HTTPResponse:
        """The status line and headers, waiting at most the rest of ``timeout``."""
        if self._response is None:
            self.set_read_timeout(self.started + self.timeout)
            self._response = self.conn.getresponse()
        return self._response

    def answered(self) -> bool:
        """Whether the server has sent anything (or closed), without reading it."""
        sock = self.conn.sock
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def set_read_timeout(self, deadline: float) -> None:
        sock = self.conn.sock
        if sock is not None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            # Shut down first: a FIN goes out now even if a buffered file object still
            # holds a reference to the socket.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._response is not None:
            self._response.close()
        self.conn.close()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def request_body(spec: ProbeSpec, *, stream: bool) -> bytes:
    """The probe's request body, or the same request without streaming."""
    if stream:
        return spec.request_body()
    body = json.loads(spec.request_body())
    body["stream"] = False
    body.pop("stream_options", None)
    return json.dumps(body).encode()


def read_bounded(exchange: Exchange, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Up to ``limit`` bytes of the body within the exchange's timeout; best effort."""
    response = exchange.response()
    deadline = exchange.started + exchange.timeout
    body = bytearray()
    try:
        while len(body) < limit and time.monotonic() < deadline:
            exchange.set_read_timeout(deadline)
            data = response.read1(limit - len(body))
            if not data:
                break
            body += data
    except (OSError, http.client.HTTPException):
        pass
    return bytes(body)


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style JSON error body (or FastAPI's ``detail``), else None."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
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


def read_content_events(exchange: Exchange, count: int, deadline: float) -> int:
    """Read an event stream until ``count`` events carrying generated text have arrived,
    the stream ends, or ``deadline`` (monotonic) passes; returns how many arrived."""
    response = exchange.response()
    decoder = SSEDecoder()
    seen = 0
    try:
        while seen < count and time.monotonic() < deadline:
            exchange.set_read_timeout(deadline)
            data = response.read1(READ_LIMIT)
            if not data:
                break
            for event in decoder.feed(data, time.perf_counter_ns()):
                chunk = interpret(event.data)
                if chunk.done or chunk.error is not None:
                    return seen
                if chunk.has_token:
                    seen += 1
    except (OSError, http.client.HTTPException, SSETooLarge, MalformedChunk):
        pass
    return seen


def describe_error(exc: BaseException) -> str:
    """One short human line for a failed request."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"[:200]
