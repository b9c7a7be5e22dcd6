"""Serve one admitted completion request: token timing, the stream, and injected faults."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.engines import EngineMetrics
from streamobs.simulator.payloads import KEEPALIVE_COMMENT
from streamobs.simulator.plan import GenerationPlan
from streamobs.simulator.records import RequestTrace
from streamobs.simulator.shapes import make_shape, pieces
from streamobs.simulator.spans import RequestSpan, unix_ns_of
from streamobs.simulator.wire import ClientGone, Connection, Emitter, ServerStopping, response

# Faults that strike at the deadline of the token after the first half of them.
_MIDSTREAM_FAULTS = frozenset({"error_event", "truncate", "reset", "malformed", "oversize"})
_OVERSIZE_PIECE = 64 * 1024


def token_deadlines(
    start_ns: int, ttft: float, itl: float, jitter: float, rng: random.Random
) -> Iterator[int]:
    """Absolute perf_counter_ns deadlines of tokens 0, 1, 2, ...

    Each deadline is the previous deadline (not the previous write) plus a delay, so a
    late write never pushes the later tokens back. Every delay is jittered by up to
    ±`jitter` of itself.
    """

    def delay_ns(seconds: float) -> int:
        factor = 1.0 + rng.uniform(-jitter, jitter) if jitter else 1.0
        return round(seconds * factor * 1e9)

    deadline = start_ns + delay_ns(ttft)
    while True:
        yield deadline
        deadline += delay_ns(itl)


class Generation:
    """One admitted request, from its first token to the end of the response."""

    def __init__(
        self,
        *,
        conn: Connection,
        plan: GenerationPlan,
        config: SimulatorConfig,
        fault: str,
        rng: random.Random,
        trace: RequestTrace,
        metrics: EngineMetrics,
        created: int,
        on_span: Callable[[RequestSpan], None] | None = None,
    ) -> None:
        self._on_span = on_span
        self._conn = conn
        self._plan = plan
        self._config = config
        self._fault = fault
        self._trace = trace
        self._metrics = metrics
        self._created = created
        self._deadlines = token_deadlines(
            trace.received_ns, config.ttft, config.itl, config.jitter, rng
        )
        self._shape = make_shape(plan, trace.response_id, created, config.reasoning_field)
        self._pieces = pieces(plan, config.partial_utf8_every)
        self._last_token_ns: int | None = None
        self._first_token_ns: int | None = None
        self._tokens = 0  # generated so far, written or not
        self._deadline: int | None = None  # the next token's, once taken
        self._admitted_ns: int | None = None
        # How the engine saw the request end; None means it did not finish.
        self._finished_reason: str | None = None
        # Whether the connection is left in a state that can carry another request.
        self.reusable = False

    def run(self) -> None:
        plan, trace = self._plan, self._trace
        try:
            self._wait_in_queue()
        except (ClientGone, ServerStopping):
            trace.client_disconnected()
            return
        admitted_ns = time.perf_counter_ns()
        self._admitted_ns = admitted_ns
        trace.admitted(admitted_ns)
        queue_s = (admitted_ns - trace.received_ns) / 1e9
        self._metrics.admitted(plan.engine_model, trace.response_id, plan.prompt_tokens, queue_s)
        try:
            try:
                if plan.stream and self._fault != "not_sse":
                    self._stream()
                else:
                    self._whole_body()
            except ClientGone:
                trace.client_disconnected()
                if self._config.ignore_disconnect:
                    self._generate_for_nobody()
        except ServerStopping:
            pass
        finally:
            finished_ns = time.perf_counter_ns()
            e2e_s = (finished_ns - trace.received_ns) / 1e9
            self._metrics.finished(
                plan.engine_model, trace.response_id, self._finished_reason, e2e_s
            )
            self._send_span(finished_ns)

    def _wait_in_queue(self) -> None:
        queue_ns = round(self._config.queue * 1e9)
        if queue_ns <= 0:
            return
        model = self._plan.engine_model
        self._metrics.waiting_started(model)
        try:
            self._conn.sleep_until(self._trace.received_ns + queue_ns)
        finally:
            self._metrics.waiting_ended(model)

    def _next_deadline(self) -> int:
        if self._deadline is None:
            self._deadline = next(self._deadlines)
        return self._deadline

    def _generate_for_nobody(self) -> None:
        """The rest of the answer, generated and counted though nobody reads it."""
        while self._tokens < self._plan.completion_tokens:
            self._conn.sleep_for_nobody(self._next_deadline())
            self._token_ready(time.perf_counter_ns())
        self._finished_reason = self._plan.finish_reason

    def _send_span(self, finished_ns: int) -> None:
        """vLLM's llm_request span of this request, from the simulator's own stamps."""
        if self._on_span is None or self._admitted_ns is None:
            return
        trace, plan = self._trace, self._plan
        received, admitted = trace.received_ns, self._admitted_ns
        first = self._first_token_ns if self._first_token_ns is not None else finished_ns
        last = self._last_token_ns if self._last_token_ns is not None else first
        span = RequestSpan(
            traceparent=trace.traceparent,
            request_id=trace.response_id,
            received_unix_ns=unix_ns_of(received),
            finished_unix_ns=unix_ns_of(finished_ns),
            time_to_first_token=(first - received) / 1e9,
            e2e=(finished_ns - received) / 1e9,
            time_in_queue=(admitted - received) / 1e9,
            prompt_tokens=plan.prompt_tokens,
            completion_tokens=self._tokens,
            time_in_model_prefill=(first - admitted) / 1e9,
            time_in_model_decode=(last - first) / 1e9,
            max_tokens=plan.max_tokens,
            temperature=plan.temperature,
        )
        trace.span_sent(span.attributes())
        self._on_span(span)

    def _token_ready(self, generated_ns: int) -> None:
        """Account for a token whose deadline was reached at `generated_ns`.

        Called after the token's write, so this bookkeeping never delays it.
        """
        self._trace.token_generated(generated_ns)
        self._tokens += 1
        self._deadline = None
        plan = self._plan
        if self._last_token_ns is None:
            self._first_token_ns = generated_ns
            ttft_s = (generated_ns - self._trace.received_ns) / 1e9
            self._metrics.first_token(
                plan.engine_model, self._trace.response_id, plan.prompt_tokens, ttft_s
            )
            itl_s = None
        else:
            itl_s = (generated_ns - self._last_token_ns) / 1e9
        self._metrics.token(plan.engine_model, self._trace.response_id, itl_s)
        self._last_token_ns = generated_ns

    def _whole_body(self) -> None:
        """stream: false, or the not_sse fault: generate everything, then one JSON body."""
        plan = self._plan
        for _ in range(plan.completion_tokens):
            self._conn.sleep_until(self._next_deadline())
            self._token_ready(time.perf_counter_ns())
        body = self._shape.body(self._pieces)
        ns = self._conn.send(response(200, body, "application/json"), self._trace)
        self._trace.status_sent(200, ns)
        self._trace.tokens_written(plan.completion_tokens, ns)
        self._trace.done_written(ns)
        self._trace.finish_reason_sent(plan.finish_reason)
        self._finished_reason = plan.finish_reason
        self.reusable = True

    def _stream(self) -> None:
        plan, fault, shape = self._plan, self._fault, self._shape
        emitter = Emitter(self._conn, self._trace, hold=fault == "buffered")
        emitter.head()
        for event in shape.early():
            emitter.event(event)
        # Events that go with the first output (vLLM's chat role chunk, Responses' and
        # Messages' opening events) are encoded now and written right before it.
        opening = shape.opening()
        self._sleep_until_first_token(emitter)
        for event in opening:
            emitter.event(event)
        if fault == "stall":
            stall_ns = round(self._config.stall_seconds * 1e9)
            self._conn.sleep_until(time.perf_counter_ns() + stall_ns)
            return
        total = plan.completion_tokens
        for index, piece in enumerate(self._pieces):
            # Encoded ahead of its deadline, so only the writes happen on time.
            before, payload = shape.token(piece, last=index == total - 1)
            if index > 0:
                self._conn.sleep_until(self._next_deadline())
            if index == total // 2 and fault in _MIDSTREAM_FAULTS and self._strike(emitter, index):
                return
            generated_ns = time.perf_counter_ns()
            for event in before:
                emitter.event(event)
            if piece.held:  # no text yet: at most chat's empty chunk, never a token write
                if payload is not None:
                    emitter.event(payload)
            else:
                assert payload is not None
                emitter.token(payload)
            self._token_ready(generated_ns)
        closing, terminal, reason = shape.finish()
        self._trace.finish_reason_sent(reason)
        for event in closing:
            emitter.event(event)
        if terminal is not None:
            emitter.done(terminal)
        emitter.end()
        self._finished_reason = plan.finish_reason
        self.reusable = True

    def _sleep_until_first_token(self, emitter: Emitter) -> None:
        """Wait for token 0's deadline, sending keep-alive comments meanwhile if set."""
        first_deadline = self._next_deadline()
        keepalive_ns = round(self._config.keepalive * 1e9)
        if keepalive_ns > 0:
            next_comment = self._trace.received_ns + keepalive_ns
            while next_comment < first_deadline:
                self._conn.sleep_until(next_comment)
                emitter.comment(KEEPALIVE_COMMENT)
                next_comment += keepalive_ns
        self._conn.sleep_until(first_deadline)

    def _strike(self, emitter: Emitter, index: int) -> bool:
        """Inject the mid-stream fault; True when the response ends here."""
        fault = self._fault
        if fault == "malformed":
            emitter.event(self._shape.malformed(self._pieces[index]))
            return False
        if fault == "error_event":
            error, after = self._shape.engine_error()
            emitter.event(error)
            if after is not None:  # vLLM's chat still sends [DONE]
                emitter.done(after)
            emitter.end()
            self._finished_reason = "error"
            self.reusable = True
        elif fault == "truncate":
            emitter.end()  # clean chunked framing, but no finish_reason nor terminal event
        elif fault == "reset":
            self._conn.reset()
        elif fault == "oversize":
            # One `data:` line that never ends, in pieces; a send fails once the client
            # has given up on it.
            piece = b"data: " + b"x" * (_OVERSIZE_PIECE - len(b"data: "))
            remaining = self._config.oversize_bytes
            while remaining > 0:
                emitter.raw_chunk(piece[:remaining])
                remaining -= min(remaining, len(piece))
                piece = b"x" * _OVERSIZE_PIECE
            emitter.end()
        return True
