"""Requests the prober does not make: ones the doctor abandons on purpose, non-streamed
ones, and ones whose response headers it inspects. On the one HTTP stack
(``streamobs.http``): sending a request and reading its response are separate steps,
every wait is bounded by the exchange's timeout, and closing the socket is explicit."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import TracebackType

from streamobs.http.bodies import error_detail
from streamobs.http.client import Exchange as HTTPExchange
from streamobs.http.client import Request, Timeouts
from streamobs.http.errors import Deadline, HTTPFailure, Kind, Phase
from streamobs.http.response import Response
from streamobs.probe.chunks import MalformedChunk
from streamobs.probe.protocol import Protocol, non_streaming
from streamobs.probe.spec import ProbeSpec
from streamobs.sse import SSEDecoder, SSETooLarge

ERROR_BODY_LIMIT = 64 * 1024
READ_LIMIT = 64 * 1024
# What a failed exchange raises; ``describe_error`` turns it into one line.
ExchangeError = HTTPFailure


class Exchange:
    """One request on a connection of its own; ``close()`` (or leaving the ``with``)
    closes the socket, which is what a client that gives up does."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.started = time.monotonic()
        self._http: HTTPExchange | None = None

    def send(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Connect and send a POST without waiting for the answer."""
        self.started = time.monotonic()
        timeouts = Timeouts(connect=self.timeout, headers=self.timeout, total=self.timeout)
        self._http = HTTPExchange(Request("POST", self.url, headers, body), timeouts)
        self._http.send()

    def response(self) -> Response:
        """The status line and headers, waiting at most the rest of ``timeout``."""
        assert self._http is not None, "send() first"
        return self._http.receive_head()

    def answered(self) -> bool:
        """Whether the server has sent anything (or closed), without reading it."""
        return self._http is None or self._http.answered()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def deadline(self, monotonic_end: float | None = None) -> Deadline:
        """The rest of the exchange's time (or until ``monotonic_end``, if sooner)."""
        end = self.started + self.timeout
        if monotonic_end is not None:
            end = min(end, monotonic_end)
        return Deadline(max(end - time.monotonic(), 0.0), Phase.BODY)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

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
    """The probe's request body (in its protocol's shape), or the same request without
    streaming."""
    if stream:
        return spec.request_body()
    return json.dumps(non_streaming(spec.request_json())).encode()


def read_bounded(exchange: Exchange, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Up to ``limit`` bytes of the body within the exchange's timeout; best effort."""
    response = exchange.response()
    deadline = exchange.deadline()
    body = bytearray()
    try:
        while len(body) < limit:
            data, _stamp = response.read_some(deadline, limit - len(body))
            if not data:
                break
            body += data
    except HTTPFailure:
        pass
    return bytes(body)


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style JSON error body (or FastAPI's ``detail``), else None."""
    return error_detail(body)


def read_content_events(exchange: Exchange, protocol: Protocol, count: int, deadline: float) -> int:
    """Read an event stream of ``protocol`` until ``count`` events carrying generated
    output have arrived, the stream ends, or ``deadline`` (monotonic) passes; returns how
    many arrived."""
    response = exchange.response()
    decoder = SSEDecoder()
    bound = exchange.deadline(deadline)
    seen = 0
    try:
        while seen < count:
            data, stamp = response.read_some(bound, READ_LIMIT)
            if not data:
                break
            for event in decoder.feed(data, stamp.arrival_ns):
                chunk = protocol.interpret(event.event, event.data)
                if chunk.done or chunk.error is not None or event.event == "error":
                    return seen
                if chunk.has_token:
                    seen += 1
    except (HTTPFailure, SSETooLarge, MalformedChunk):
        pass
    return seen


def describe_error(exc: HTTPFailure) -> str:
    """One short human line for a failed request."""
    if exc.kind is Kind.TIMEOUT:
        return "timed out"
    if exc.phase is Phase.HEADERS and exc.kind is Kind.CLOSED:
        return "connection closed without a response"
    return exc.message
