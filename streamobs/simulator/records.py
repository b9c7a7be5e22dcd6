"""What the simulator did for each request, stamped with time.perf_counter_ns().

perf_counter_ns is CLOCK_MONOTONIC on Linux, so a client in the same process (or on the
same host) can compare these stamps with its own to measure its timing error.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """One request as served. Stamps are perf_counter_ns() taken right after the write."""

    response_id: str
    endpoint: str
    model: str
    fault: str
    stream: bool
    # HTTP status sent, None while (or if) no status line went out.
    status: int | None
    # When the request body had been read.
    received_ns: int
    headers_write_ns: int | None
    # Every `data:` event except [DONE]: index 0 is the role chunk for chat.
    event_write_ns: tuple[int, ...]
    # The events carrying generated text (deltas), one per token unless a token was held
    # inside a UTF-8 character (partial_utf8_every): its text rides on the next delta.
    # For a buffered stream or a non-streamed body all of them carry the time of the
    # single final write.
    token_write_ns: tuple[int, ...]
    # When each token's scheduled time was reached (it was ready to be written).
    token_generated_ns: tuple[int, ...]
    keepalive_write_ns: tuple[int, ...]
    # After `data: [DONE]` (or the whole non-streamed body) was written.
    done_write_ns: int | None
    tokens_sent: int  # deltas sent (see token_write_ns)
    prompt_tokens: int
    # The finish_reason that went out to the client, if any did.
    finish_reason: str | None
    client_disconnected: bool
    # False while the request is still being served.
    complete: bool
    # When the request left the queue and was admitted (None: it never was).
    admitted_ns: int | None = None
    # The request's X-Request-Id and traceparent as received.
    request_id: str | None = None
    traceparent: str | None = None
    # Tokens generated for it, written or not (a server that ignores a disconnect
    # generates for nobody).
    tokens_generated: int = 0
    # The attributes of the llm_request span sent for it (None: none was sent).
    span_attributes: dict[str, Any] | None = None
    # Stamps above that are a clock read after the call, the kernel's being missing (the
    # request's receipt, a write): late by as long as the serving thread was.
    clock_stamps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RequestTrace:
    """The live, mutable side of a RequestRecord, written by the one thread serving it."""

    def __init__(
        self,
        *,
        response_id: str,
        endpoint: str,
        model: str,
        fault: str,
        stream: bool,
        received_ns: int,
        prompt_tokens: int,
        request_id: str | None = None,
        traceparent: str | None = None,
        clock_stamps: int = 0,
    ) -> None:
        self.response_id = response_id
        self.received_ns = received_ns
        self.request_id = request_id
        self.traceparent = traceparent
        self._admitted_ns: int | None = None
        self._span: dict[str, Any] | None = None
        self._fixed = (endpoint, model, fault, stream, prompt_tokens)
        self._lock = threading.Lock()
        self._status: int | None = None
        self._headers_ns: int | None = None
        self._events: list[int] = []
        self._tokens: list[int] = []
        self._generated: list[int] = []
        self._keepalives: list[int] = []
        self._done_ns: int | None = None
        self._finish_reason: str | None = None
        self._disconnected = False
        self._complete = threading.Event()
        self._clock_stamps = clock_stamps

    def status_sent(self, status: int, ns: int) -> None:
        with self._lock:
            self._status = status
            self._headers_ns = ns

    def event_written(self, ns: int, *, token: bool = False) -> None:
        with self._lock:
            self._events.append(ns)
            if token:
                self._tokens.append(ns)

    def tokens_written(self, count: int, ns: int) -> None:
        """Tokens that went out together in one non-streamed body."""
        with self._lock:
            self._tokens.extend([ns] * count)

    def token_generated(self, ns: int) -> None:
        with self._lock:
            self._generated.append(ns)

    def keepalive_written(self, ns: int) -> None:
        with self._lock:
            self._keepalives.append(ns)

    def done_written(self, ns: int) -> None:
        with self._lock:
            self._done_ns = ns

    def finish_reason_sent(self, reason: str) -> None:
        with self._lock:
            self._finish_reason = reason

    def admitted(self, ns: int) -> None:
        with self._lock:
            self._admitted_ns = ns

    def span_sent(self, attributes: dict[str, Any]) -> None:
        with self._lock:
            self._span = dict(attributes)

    def clock_stamped(self) -> None:
        """One more stamp was a clock read: the kernel had none for it."""
        with self._lock:
            self._clock_stamps += 1

    def client_disconnected(self) -> None:
        with self._lock:
            self._disconnected = True

    def complete(self) -> None:
        self._complete.set()

    def wait_complete(self, timeout: float) -> None:
        self._complete.wait(timeout)

    def snapshot(self) -> RequestRecord:
        endpoint, model, fault, stream, prompt_tokens = self._fixed
        with self._lock:
            return RequestRecord(
                response_id=self.response_id,
                endpoint=endpoint,
                model=model,
                fault=fault,
                stream=stream,
                status=self._status,
                received_ns=self.received_ns,
                headers_write_ns=self._headers_ns,
                event_write_ns=tuple(self._events),
                token_write_ns=tuple(self._tokens),
                token_generated_ns=tuple(self._generated),
                keepalive_write_ns=tuple(self._keepalives),
                done_write_ns=self._done_ns,
                tokens_sent=len(self._tokens),
                prompt_tokens=prompt_tokens,
                finish_reason=self._finish_reason,
                client_disconnected=self._disconnected,
                complete=self._complete.is_set(),
                admitted_ns=self._admitted_ns,
                request_id=self.request_id,
                traceparent=self.traceparent,
                tokens_generated=len(self._generated),
                span_attributes=None if self._span is None else dict(self._span),
                clock_stamps=self._clock_stamps,
            )


class RecordStore:
    """The most recent `limit` traces by response id; the oldest are dropped first."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, RequestTrace] = OrderedDict()

    def add(self, trace: RequestTrace) -> None:
        with self._lock:
            self._traces[trace.response_id] = trace
            while len(self._traces) > self._limit:
                self._traces.popitem(last=False)

    def get(self, response_id: str, wait: float) -> RequestRecord | None:
        with self._lock:
            trace = self._traces.get(response_id)
        if trace is None:
            return None
        # A client that has just read [DONE] can ask before the serving thread has
        # stamped it; waiting for completion hands it the final record.
        if wait > 0:
            trace.wait_complete(wait)
        return trace.snapshot()

    def all(self) -> list[RequestRecord]:
        with self._lock:
            traces = list(self._traces.values())
        return [trace.snapshot() for trace in traces]
