"""One streaming probe: send the request, stamp every phase, classify the outcome.

Every stamp is on the ``time.perf_counter_ns()`` timeline and is taken for the bytes just
read: on plain TCP under Linux from the kernel's receive timestamp (``SO_TIMESTAMPNS``),
so neither this process's scheduling nor other probes holding the interpreter lock count;
otherwise (TLS) right after the call that returned them. Decoding and bookkeeping happen
after the stamp and never inflate a result. The connection is closed on every exit path so
the server stops generating.
"""

from __future__ import annotations

import json
import ssl
import time

import requests
from urllib3.exceptions import DecodeError, HTTPError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from streamobs.probe.chunks import MalformedChunk, interpret
from streamobs.probe.delivery import analyse_delivery
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.probe.transport import PhaseClock, activate, deactivate, new_session, read_some
from streamobs.sse import SSEDecoder, SSETooLarge

READ_LIMIT = 64 * 1024  # bytes per read; also bounds decompression per read
ERROR_BODY_LIMIT = 64 * 1024
HTTP_VERSIONS = {9: "HTTP/0.9", 10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2", 30: "HTTP/3"}


class _Failure(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class _ProbeRun:
    """Mutable state of one run; ``result()`` freezes it into a ProbeResult."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.clock = PhaseClock()
        self.started_at = 0.0
        self.start_ns = 0
        self.end_ns = 0
        self.outcome: Outcome | None = None
        self.error: str | None = None
        self.http_status: int | None = None
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        self.http_version: str | None = None
        self.first_event_ns: int | None = None
        self.first_token_ns: int | None = None
        self.first_answer_ns: int | None = None
        self.last_token_ns: int | None = None
        self.done_ns: int | None = None
        self.token_arrivals: list[int] = []
        self.token_reads: list[int] = []
        self.events_by_read: list[int] = []
        self.reads = 0
        self.events = 0
        self.bytes_received = 0
        self.keepalives = 0
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.response_id: str | None = None
        self.response_model: str | None = None

    # -- the run --------------------------------------------------------------------
    def run(self) -> ProbeResult:
        spec = self.spec
        session = new_session(spec.verify_tls)
        request = session.prepare_request(
            requests.Request(
                "POST",
                spec.target.request_url,
                data=spec.request_body(),
                headers=spec.request_headers(),
            )
        )
        token = activate(self.clock)
        response: requests.Response | None = None
        try:
            self.started_at = time.time()
            self.start_ns = time.perf_counter_ns()
            try:
                response = self._send(session, request)
                self._read_response(response)
            except _Failure as failure:
                self.outcome = failure.outcome
                self.error = failure.args[0]
            except (requests.RequestException, HTTPError, OSError) as exc:
                # Anything the network does that the classes above did not name.
                got_headers = self.clock.headers_ns is not None
                self.outcome = Outcome.TRUNCATED if got_headers else Outcome.CONNECT
                self.error = f"{type(exc).__name__}: {_reason(exc)}"
            self.end_ns = time.perf_counter_ns()
        finally:
            deactivate(token)
            if response is not None:
                response.close()
            session.close()
        return self.result()

    def _send(
        self, session: requests.Session, request: requests.PreparedRequest
    ) -> requests.Response:
        timeouts = self.spec.timeouts
        try:
            return session.send(
                request,
                stream=True,
                timeout=(timeouts.connect, timeouts.headers),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise _Failure(Outcome.TLS, f"TLS handshake failed: {_reason(exc)}") from None
        except requests.exceptions.ConnectTimeout:
            raise _Failure(
                Outcome.CONNECT, f"connect timed out after {timeouts.connect:g} s"
            ) from None
        except requests.exceptions.ReadTimeout:
            if self.clock.connect_done_ns is None:  # the TLS handshake stalled
                raise _Failure(
                    Outcome.TLS, f"TLS handshake timed out after {timeouts.connect:g} s"
                ) from None
            raise _Failure(
                Outcome.TIMEOUT_HEADERS, f"no response headers within {timeouts.headers:g} s"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if self.clock.connect_done_ns is None:
                raise _Failure(Outcome.CONNECT, f"cannot connect: {_reason(exc)}") from None
            raise _Failure(
                Outcome.TRUNCATED, f"connection closed before the response headers: {_reason(exc)}"
            ) from None

    def _read_response(self, response: requests.Response) -> None:
        raw = response.raw
        self.http_status = response.status_code
        self.content_type = response.headers.get("Content-Type")
        self.content_encoding = response.headers.get("Content-Encoding")
        self.http_version = HTTP_VERSIONS.get(getattr(raw, "version", 0))
        if response.status_code != 200:
            raise _Failure(Outcome.HTTP_STATUS, self._http_error_message(response))
        media_type = (self.content_type or "").split(";")[0].strip().lower()
        if media_type != "text/event-stream":
            raise _Failure(
                Outcome.NOT_SSE,
                f"HTTP 200 with Content-Type {self.content_type or 'missing'}, "
                "not text/event-stream",
            )
        self._read_stream(response)

    def _http_error_message(self, response: requests.Response) -> str:
        body = self._read_bounded(response, ERROR_BODY_LIMIT)
        detail = ""
        try:
            parsed = json.loads(body)
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(error, dict):
                detail = str(error.get("message", ""))
            elif isinstance(error, str):
                detail = error
            elif isinstance(parsed, dict) and "detail" in parsed:
                detail = str(parsed["detail"])
        except ValueError:
            detail = body.decode("utf-8", errors="replace").strip().splitlines()[0] if body else ""
        reason = response.reason or ""
        message = f"HTTP {response.status_code} {reason}".strip()
        return f"{message}: {detail[:300]}" if detail else message

    def _read_bounded(self, response: requests.Response, limit: int) -> bytes:
        """Best effort: an error body is evidence, not worth a timeout of its own."""
        body = bytearray()
        deadline = self.start_ns + int(self.spec.timeouts.total * 1e9)
        try:
            while len(body) < limit:
                remaining = (deadline - time.perf_counter_ns()) / 1e9
                if remaining <= 0:
                    break
                self.clock.set_read_timeout(remaining)
                data = read_some(response.raw, limit - len(body))
                if not data:
                    break
                body += data
        except (ReadTimeoutError, ProtocolError, DecodeError, Urllib3SSLError, OSError):
            pass
        self.bytes_received += len(body)
        return bytes(body)

    def _read_stream(self, response: requests.Response) -> None:
        spec = self.spec
        decoder = SSEDecoder(spec.max_line_bytes, spec.max_event_bytes)
        total_deadline = self.start_ns + int(spec.timeouts.total * 1e9)
        first_token_deadline = min(
            total_deadline, self.start_ns + int(spec.timeouts.first_token * 1e9)
        )
        raw = response.raw
        try:
            while True:
                deadline = first_token_deadline if self.first_token_ns is None else total_deadline
                remaining_ns = deadline - time.perf_counter_ns()
                if remaining_ns <= 0:
                    raise self._timeout()
                self.clock.set_read_timeout(remaining_ns / 1e9)
                try:
                    data = read_some(raw, READ_LIMIT)
                except ReadTimeoutError:
                    raise self._timeout() from None
                received_ns = self.clock.received()
                if not data:
                    self._end_of_body(decoder)
                    return
                self.reads += 1
                self.bytes_received += len(data)
                events = decoder.feed(data, received_ns)
                self.keepalives = decoder.comments
                if events:
                    self.events_by_read.append(len(events))
                    for event in events:
                        if self._on_event(event.data, event.event, event.received_ns):
                            return
        except SSETooLarge as exc:
            raise _Failure(Outcome.TOO_LARGE, str(exc)) from None
        except DecodeError as exc:
            raise _Failure(Outcome.MALFORMED, f"cannot decode the body: {_reason(exc)}") from None
        except (ProtocolError, Urllib3SSLError) as exc:
            raise _Failure(
                Outcome.TRUNCATED, f"connection broken mid-stream: {_reason(exc)}"
            ) from None

    def _on_event(self, data: str, event_type: str, received_ns: int) -> bool:
        """Account one data event; True when the stream is finished."""
        at = received_ns - self.start_ns
        self.events += 1
        if self.first_event_ns is None:
            self.first_event_ns = at
        try:
            chunk = interpret(data)
        except MalformedChunk as exc:
            raise _Failure(Outcome.MALFORMED, f"event {self.events}: {exc}") from None
        if chunk.done:
            self.done_ns = at
            if not self.token_arrivals:
                raise _Failure(Outcome.EMPTY, "stream finished without any generated content")
            self.outcome = Outcome.OK
            return True
        if chunk.error is not None or event_type == "error":
            message = chunk.error or data[:300]
            raise _Failure(Outcome.STREAM_ERROR, f"error event after HTTP 200: {message}")
        if chunk.has_token:
            if self.first_token_ns is None:
                self.first_token_ns = at
            if chunk.has_answer and self.first_answer_ns is None:
                self.first_answer_ns = at
            self.last_token_ns = at
            self.token_arrivals.append(at)
            self.token_reads.append(self.reads)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.completion_tokens is not None:
            self.completion_tokens = chunk.completion_tokens
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        self.response_id = self.response_id or chunk.response_id
        self.response_model = self.response_model or chunk.model
        return False

    def _end_of_body(self, decoder: SSEDecoder) -> None:
        """EOF: a stream that said it finished is complete; anything else was cut."""
        now = time.perf_counter_ns() - self.start_ns
        if self.finish_reason is None or decoder.has_pending:
            raise _Failure(
                Outcome.TRUNCATED,
                f"connection closed after {self.events} events without [DONE] or finish_reason",
            )
        self.done_ns = now
        if not self.token_arrivals:
            raise _Failure(Outcome.EMPTY, "stream finished without any generated content")
        self.outcome = Outcome.OK

    def _timeout(self) -> _Failure:
        timeouts = self.spec.timeouts
        if self.first_token_ns is None:
            waited = min(timeouts.first_token, timeouts.total)
            return _Failure(Outcome.TIMEOUT_FIRST_TOKEN, f"no token within {waited:g} s")
        return _Failure(
            Outcome.TIMEOUT_TOTAL,
            f"stream not finished within {timeouts.total:g} s "
            f"({len(self.token_arrivals)} content events so far)",
        )

    # -- the record -----------------------------------------------------------------
    def result(self) -> ProbeResult:
        spec = self.spec
        assert self.outcome is not None, "every exit path of run() sets an outcome"
        if self.completion_tokens is not None:
            output_tokens: int | None = self.completion_tokens
            source: str | None = "usage"
        elif self.token_arrivals:
            output_tokens, source = len(self.token_arrivals), "events"
        else:
            output_tokens, source = None, None
        delivery = None
        if self.http_status == 200 and self.reads:
            delivery = analyse_delivery(
                self.reads, self.events_by_read, self.token_arrivals, self.token_reads
            )
        error = self.error
        if error is not None and spec.api_key is not None:
            error = spec.api_key.redact(error)

        def rel(stamp: int | None) -> int | None:
            return None if stamp is None else stamp - self.start_ns

        return ProbeResult(
            url=spec.target.request_url,
            endpoint=spec.target.endpoint,
            model=spec.model,
            outcome=self.outcome,
            start_ns=self.start_ns,
            started_at=self.started_at,
            connect_ns=rel(self.clock.connect_done_ns),
            headers_ns=rel(self.clock.headers_ns),
            first_event_ns=self.first_event_ns,
            first_token_ns=self.first_token_ns,
            first_answer_ns=self.first_answer_ns,
            last_token_ns=self.last_token_ns,
            done_ns=self.done_ns,
            end_ns=self.end_ns - self.start_ns,
            token_arrivals_ns=tuple(self.token_arrivals),
            output_tokens=output_tokens,
            output_tokens_source=source,
            prompt_tokens=self.prompt_tokens,
            content_events=len(self.token_arrivals),
            events=self.events,
            keepalives=self.keepalives,
            bytes_received=self.bytes_received,
            delivery=delivery,
            http_status=self.http_status,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            http_version=self.http_version,
            response_id=self.response_id,
            response_model=self.response_model,
            finish_reason=self.finish_reason,
            error=error,
        )


def _reason(exc: BaseException) -> str:
    """The innermost human reason, e.g. 'Connection refused', without URLs or headers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    best = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        strerror = getattr(current, "strerror", None)
        if isinstance(current, OSError) and strerror:
            return str(strerror)
        if isinstance(current, ssl.SSLError) and current.reason:
            return str(current.reason)
        text = str(current)
        if text:
            best = text
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException) and current.args:
            nested = current.args[0] if isinstance(current.args[0], BaseException) else None
        current = nested or current.__cause__ or current.__context__
    # urllib3 prefixes messages with the connection object's repr; keep the human part.
    return best.rsplit("): ", 1)[-1].strip() or type(exc).__name__


def run_probe(spec: ProbeSpec) -> ProbeResult:
    """Run one probe; never raises for anything the server or the network does."""
    return _ProbeRun(spec).run()
