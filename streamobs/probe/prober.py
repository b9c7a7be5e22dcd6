"""One streaming probe: send the request, stamp every phase, classify the outcome.

The exchange runs on the one HTTP stack (``streamobs.http``): ``request_sent`` is the
kernel's transmit stamp of the request's last byte, every arrival the kernel's receive
stamp of the read that carried it, through TLS too, and every phase ends at its deadline
whatever the server does. Decoding and bookkeeping happen after the stamp and never
inflate a result; each event also carries how far its stamp can be trusted, so the probe
can say whether its own lateness could have moved a figure (``TimingQuality``). The
connection is closed on every exit path so the server stops generating.
"""

from __future__ import annotations

import logging
import time

from streamobs.http.bodies import error_detail, first_line
from streamobs.http.channel import ReadStamp
from streamobs.http.client import Exchange, Request
from streamobs.http.client import Timeouts as HTTPTimeouts
from streamobs.http.errors import Deadline, HTTPFailure, Kind, Phase
from streamobs.http.response import Response
from streamobs.http.runqueue import RunQueueClock
from streamobs.probe.chunks import Chunk, MalformedChunk
from streamobs.probe.delivery import analyse_delivery
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.probe.timing import EventStamps, assess_timing
from streamobs.probe.tracecontext import TraceContext, new_trace_context, traced_headers
from streamobs.secret import redact
from streamobs.sse import SSEDecoder, SSETooLarge

_log = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024  # decoded bytes per read; also bounds decompression per read
ERROR_BODY_LIMIT = 64 * 1024
ERROR_CHARS = 400  # a result's error line, after secrets are masked


class _Failure(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def _outcome_of(failure: HTTPFailure) -> Outcome:
    """The outcome class of a failure before any body was read."""
    if failure.phase in (Phase.DNS, Phase.CONNECT):
        return Outcome.CONNECT
    if failure.phase is Phase.TLS or failure.kind is Kind.TLS:
        return Outcome.TLS
    by_kind = {
        Kind.TIMEOUT: Outcome.TIMEOUT_HEADERS,
        Kind.MALFORMED: Outcome.MALFORMED,
        Kind.TOO_LARGE: Outcome.TOO_LARGE,
    }
    return by_kind.get(failure.kind, Outcome.TRUNCATED)


def _describe(failure: HTTPFailure, spec: ProbeSpec) -> str:
    timeouts = spec.timeouts
    if failure.kind is Kind.TIMEOUT:
        if failure.phase is Phase.DNS:
            return f"name resolution timed out after {timeouts.connect:g} s"
        if failure.phase is Phase.CONNECT:
            return f"connect timed out after {timeouts.connect:g} s"
        if failure.phase is Phase.TLS:
            return f"TLS handshake timed out after {timeouts.connect:g} s"
        return f"no response headers within {timeouts.headers:g} s"
    if failure.phase in (Phase.CONNECT, Phase.DNS):
        return f"cannot connect: {failure.message}"
    if failure.phase is Phase.HEADERS and failure.kind is Kind.CLOSED:
        return f"connection closed before the response headers: {failure.message}"
    return failure.message


class _ProbeRun:
    """Mutable state of one run; ``result()`` freezes it into a ProbeResult."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.started_at = 0.0
        self.start_ns = 0
        self.end_ns = 0
        self.exchange: Exchange | None = None
        self.headers_stamp: ReadStamp | None = None
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.http_status: int | None = None
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        self.http_version: str | None = None
        self.first_event_ns: int | None = None
        self.first_answer_ns: int | None = None
        self.first_tool_call_ns: int | None = None
        self.reasoning_events = 0
        self.tool_call_events = 0
        self.reasoning_tokens: int | None = None
        self.done_ns: int | None = None
        self.stamps = EventStamps()
        self.reads = 0
        self.events = 0
        self.bytes_received = 0
        self.keepalives = 0
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.run_queue_wait_ns: int | None = None
        self.trace: TraceContext | None = None
        self.request_id: str | None = None

    # -- the run --------------------------------------------------------------------
    def run(self) -> ProbeResult:
        spec = self.spec
        timeouts = spec.timeouts
        # A new trace per probe: the server's own span of this request joins it by id.
        headers, self.trace, self.request_id = traced_headers(
            spec.request_headers(), new_trace_context()
        )
        request = Request("POST", spec.target.request_url, headers, spec.request_body())
        runqueue = RunQueueClock()
        waited_before = runqueue.wait_ns()
        self.started_at = time.time()
        self.start_ns = time.perf_counter_ns()
        exchange = Exchange(
            request,
            HTTPTimeouts(timeouts.connect, timeouts.headers, timeouts.total),
            verify_tls=spec.verify_tls,
            resolver=spec.resolver,
            start_ns=self.start_ns,
        )
        self.exchange = exchange
        try:
            try:
                response = exchange.open()
            except HTTPFailure as failure:
                raise _Failure(_outcome_of(failure), _describe(failure, spec)) from None
            self.headers_stamp = response.head_stamp
            self._read_response(response)
        except _Failure as failure:
            self.outcome = failure.outcome
            self.error = failure.args[0]
        except Exception as exc:  # a server found a path nobody foresaw: still a result
            _log.warning("probe of %s failed unexpectedly: %s", spec.target.request_url, type(exc))
            self.outcome = Outcome.MALFORMED
            self.error = f"unexpected {type(exc).__name__} while reading the response"
        finally:
            exchange.close()
            self.end_ns = time.perf_counter_ns()
            waited_after = runqueue.wait_ns()
            runqueue.close()
        if waited_before is not None and waited_after is not None:
            self.run_queue_wait_ns = waited_after - waited_before
        return self.result()

    def _read_response(self, response: Response) -> None:
        self.http_status = response.status
        self.content_type = response.content_type
        self.content_encoding = response.headers.get("Content-Encoding")
        self.http_version = response.version
        if response.status != 200:
            raise _Failure(Outcome.HTTP_STATUS, self._http_error_message(response))
        if response.media_type != "text/event-stream":
            raise _Failure(
                Outcome.NOT_SSE,
                f"HTTP 200 with Content-Type {self.content_type or 'missing'}, "
                "not text/event-stream",
            )
        try:
            self._read_stream(response)
        except HTTPFailure as failure:
            raise self._body_failure(failure) from None
        except SSETooLarge as exc:
            raise _Failure(Outcome.TOO_LARGE, str(exc)) from None

    def _body_failure(self, failure: HTTPFailure) -> _Failure:
        if failure.kind is Kind.TIMEOUT:
            return self._timeout()
        if failure.kind is Kind.MALFORMED:
            return _Failure(Outcome.MALFORMED, f"cannot decode the body: {failure.message}")
        if failure.kind is Kind.TOO_LARGE:
            return _Failure(Outcome.TOO_LARGE, failure.message)
        return _Failure(Outcome.TRUNCATED, f"connection broken mid-stream: {failure.message}")

    def _http_error_message(self, response: Response) -> str:
        body = self._read_bounded(response, ERROR_BODY_LIMIT)
        detail = error_detail(body) or first_line(body)
        message = f"HTTP {response.status} {response.reason}".strip()
        return f"{message}: {detail}" if detail else message

    def _read_bounded(self, response: Response, limit: int) -> bytes:
        """Best effort: an error body is evidence, not worth a timeout of its own."""
        assert self.exchange is not None
        body = bytearray()
        try:
            while len(body) < limit:
                data, _stamp = response.read_some(self.exchange.total, limit - len(body))
                if not data:
                    break
                body += data
        except HTTPFailure:
            pass
        self.bytes_received = response.wire_bytes
        return bytes(body)

    def _read_stream(self, response: Response) -> None:
        spec = self.spec
        assert self.exchange is not None
        decoder = SSEDecoder(spec.max_line_bytes, spec.max_event_bytes)
        total = self.exchange.total
        first_token = Deadline(spec.timeouts.first_token, Phase.BODY, self.start_ns)
        if first_token.end_ns > total.end_ns:
            first_token = total
        while True:
            deadline = first_token if not self.stamps.tokens else total
            data, stamp = response.read_some(deadline, READ_LIMIT)
            self.bytes_received = response.wire_bytes
            if not data:
                self._end_of_body(decoder, stamp)
                return
            self.reads += 1
            events = decoder.feed(data, stamp.arrival_ns)
            self.keepalives = decoder.comments
            if not events:
                continue
            self.stamps.read_with_events(len(events), stamp, exact_tail=not decoder.has_pending)
            for index, event in enumerate(events):
                last = index == len(events) - 1
                if self._on_event(event.data, event.event, stamp, last):
                    return

    def _on_event(self, data: str, event_type: str, stamp: ReadStamp, last: bool) -> bool:
        """Account one data event; True when the stream is finished."""
        at = stamp.arrival_ns
        self.events += 1
        if self.events > self.spec.max_events:
            raise _Failure(Outcome.TOO_LARGE, f"more than {self.spec.max_events} events")
        if self.first_event_ns is None:
            self.first_event_ns = at
        try:
            chunk = self.spec.target.protocol.interpret(event_type, data)
        except MalformedChunk as exc:
            raise _Failure(Outcome.MALFORMED, f"event {self.events}: {exc}") from None
        self._account(chunk)
        if chunk.done:
            self.done_ns = at
            self.stamps.done(last)
            if not self.stamps.tokens:
                raise _Failure(Outcome.EMPTY, "stream finished without any generated content")
            self.outcome = Outcome.OK
            return True
        if chunk.error is not None and chunk.error_outcome is not Outcome.STREAM_ERROR:
            raise _Failure(chunk.error_outcome, chunk.error)
        if chunk.error is not None or event_type == "error":
            message = chunk.error or data
            raise _Failure(Outcome.STREAM_ERROR, f"error event after HTTP 200: {message}")
        if chunk.has_token:
            if chunk.has_answer and self.first_answer_ns is None:
                self.first_answer_ns = at
            if chunk.has_tool_call:
                self.tool_call_events += 1
                if self.first_tool_call_ns is None:
                    self.first_tool_call_ns = at
            if chunk.has_reasoning:
                self.reasoning_events += 1
            self.stamps.token(at, last)
        return False

    def _account(self, chunk: Chunk) -> None:
        """What an event says about the response; terminal and failure events carry usage
        and ids too (Responses' ``response.completed``, ``response.failed``)."""
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.completion_tokens is not None:
            self.completion_tokens = chunk.completion_tokens
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.reasoning_tokens is not None:
            self.reasoning_tokens = chunk.reasoning_tokens
        self.response_id = self.response_id or chunk.response_id
        self.response_model = self.response_model or chunk.model

    def _end_of_body(self, decoder: SSEDecoder, stamp: ReadStamp) -> None:
        """EOF: a stream that said it finished is complete; anything else was cut."""
        protocol = self.spec.target.protocol
        if not protocol.ends_at_finish_reason or self.finish_reason is None or decoder.has_pending:
            raise _Failure(
                Outcome.TRUNCATED,
                f"connection closed after {self.events} events without {protocol.terminal}",
            )
        self.done_ns = self.stamps.last_arrival_ns or stamp.arrival_ns
        self.stamps.done_at_close()
        if not self.stamps.tokens:
            raise _Failure(Outcome.EMPTY, "stream finished without any generated content")
        self.outcome = Outcome.OK

    def _timeout(self) -> _Failure:
        timeouts = self.spec.timeouts
        if not self.stamps.tokens:
            waited = min(timeouts.first_token, timeouts.total)
            return _Failure(Outcome.TIMEOUT_FIRST_TOKEN, f"no token within {waited:g} s")
        return _Failure(
            Outcome.TIMEOUT_TOTAL,
            f"stream not finished within {timeouts.total:g} s "
            f"({len(self.stamps.tokens)} content events so far)",
        )

    # -- the record -----------------------------------------------------------------
    def result(self) -> ProbeResult:
        spec = self.spec
        assert self.outcome is not None, "every exit path of run() sets an outcome"
        assert self.exchange is not None
        tokens = self.stamps.tokens
        if self.completion_tokens is not None:
            output_tokens: int | None = self.completion_tokens
            source: str | None = "usage"
        elif tokens:
            output_tokens, source = len(tokens), "events"
        else:
            output_tokens, source = None, None
        delivery = None
        if self.http_status == 200 and self.reads:
            delivery = analyse_delivery(
                self.reads,
                self.stamps.events_by_read,
                tokens,
                self.stamps.token_reads,
                self.stamps.vouched_reads(),
            )
        error = self.error
        if error is not None:
            # Masked before it is cut: no prefix of a secret the server echoed survives.
            error = redact(error, spec.secrets(), max_length=ERROR_CHARS)
        phases = self.exchange.phases
        sent = phases.sent  # the exchange's own record: kernel stamp once it was queued
        origin = sent.sent_ns if sent is not None else None

        def since_sent(stamp: int | None) -> int | None:
            return None if stamp is None or origin is None else stamp - origin

        return ProbeResult(
            url=spec.target.request_url,
            endpoint=spec.target.endpoint,
            model=spec.model,
            outcome=self.outcome,
            start_ns=self.start_ns,
            started_at=self.started_at,
            dns_ns=phases.dns_ns,
            connect_ns=phases.connect_ns,
            tls_ns=phases.tls_ns,
            request_sent_ns=None if origin is None else origin - self.start_ns,
            headers_ns=since_sent(self.headers_stamp.arrival_ns if self.headers_stamp else None),
            first_event_ns=since_sent(self.first_event_ns),
            first_token_ns=since_sent(tokens[0] if tokens else None),
            first_answer_ns=since_sent(self.first_answer_ns),
            first_tool_call_ns=since_sent(self.first_tool_call_ns),
            last_token_ns=since_sent(tokens[-1] if tokens else None),
            done_ns=since_sent(self.done_ns),
            end_ns=self.end_ns - self.start_ns,
            token_arrivals_ns=tuple(t - origin for t in tokens) if origin is not None else (),
            output_tokens=output_tokens,
            output_tokens_source=source,
            prompt_tokens=self.prompt_tokens,
            content_events=len(tokens),
            reasoning_events=self.reasoning_events,
            tool_call_events=self.tool_call_events,
            reasoning_tokens=self.reasoning_tokens,
            events=self.events,
            keepalives=self.keepalives,
            bytes_received=self.bytes_received,
            delivery=delivery,
            timing=assess_timing(sent, self.stamps, self.run_queue_wait_ns),
            http_status=self.http_status,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            http_version=self.http_version,
            tls_version=phases.tls_version,
            response_id=self.response_id,
            response_model=self.response_model,
            finish_reason=self.finish_reason,
            error=error,
            trace_id=None if self.trace is None else self.trace.trace_id,
            span_id=None if self.trace is None else self.trace.span_id,
            request_id=self.request_id,
        )


def run_probe(spec: ProbeSpec) -> ProbeResult:
    """Run one probe; never raises for anything the server or the network does."""
    return _ProbeRun(spec).run()
