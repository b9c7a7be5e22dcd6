"""What the simulator answers: routing, the OpenAI-compatible endpoints and /sim/*."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from streamobs.simulator import kernel_stamps
from streamobs.simulator.config import FAULTS, FORCEABLE_FAULTS, SimulatorConfig
from streamobs.simulator.engines import EngineMetrics, engine_metrics
from streamobs.simulator.generation import Generation
from streamobs.simulator.payloads import (
    COMPLETIONS_ENDPOINT,
    ENDPOINTS,
    RESPONSES_ENDPOINT,
    dumps,
    error_body,
    error_body_for,
    models_body,
)
from streamobs.simulator.plan import ApiError, plan_request
from streamobs.simulator.records import RecordStore, RequestTrace
from streamobs.simulator.spans import RequestSpan, SpanSender, build_span
from streamobs.simulator.wire import ClientGone, Connection, ServerStopping, response

FAULT_HEADER = "X-Streamobs-Sim-Fault"
MAX_REQUEST_ID = 128  # characters of an X-Request-Id taken into the response id
RECORDS_KEPT = 10_000
# The simulated KV cache holds this many full-length sequences.
KV_CACHE_SEQUENCES = 8

_MAX_BODY_BYTES = 16 * 1024 * 1024
# Faults that make sense for a request that asked for one JSON body (stream: false).
_NON_STREAM_FAULTS = frozenset({"http_500", "http_429", "hang", "none"})
_REQUEST_PREFIX = "/sim/requests/"
_GET_PATHS = frozenset({"/v1/models", "/health", "/metrics", "/prometheus/metrics"})


class SimulatorApp:
    """The simulator's state and request handling; thread-safe."""

    def __init__(
        self, config: SimulatorConfig, seed: int | None, records_kept: int = RECORDS_KEPT
    ) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)
        self.stopping = threading.Event()
        self.records = RecordStore(records_kept)
        self.metrics: EngineMetrics = engine_metrics(
            config.engine, KV_CACHE_SEQUENCES * config.max_model_len
        )
        self.metrics.add_model(config.model)
        self._spans: SpanSender | None = None

    def span_sender(self) -> SpanSender | None:
        """The sender for the configured traces endpoint (replaced when it changes)."""
        config = self.config
        with self._lock:
            current = self._spans
            wanted = (
                config.otlp_traces_endpoint,
                config.otlp_traces_protocol,
                config.otlp_traces_batch_delay,
            )
            if (
                current is not None
                and (
                    current.endpoint,
                    current.protocol,
                    current.batch_delay,
                )
                == wanted
            ):
                return current
            self._spans = SpanSender(*wanted) if config.otlp_traces_endpoint else None
        if current is not None:
            current.stop(0.5)
        return self._spans

    def send_span(self, request: RequestSpan) -> None:
        sender = self.span_sender()
        span = build_span(request)
        if sender is not None and span is not None:
            sender.add(span)

    def sent_span_bodies(self) -> list[bytes]:
        with self._lock:
            sender = self._spans
        return [] if sender is None else list(sender.bodies)

    def flush_spans(self) -> None:
        """Export the spans waiting now instead of at the next batch."""
        with self._lock:
            sender = self._spans
        if sender is not None:
            sender.flush()

    def stop_spans(self) -> None:
        """Send what is waiting and stop (the SDK flushes at shutdown too)."""
        with self._lock:
            sender, self._spans = self._spans, None
        if sender is not None:
            sender.stop()

    @property
    def config(self) -> SimulatorConfig:
        with self._lock:
            return self._config

    def reconfigure(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply a partial update for requests that arrive from now on."""
        with self._lock:
            self._config = self._config.with_changes(changes)
            config = self._config
        if config.engine != self.metrics.kind:
            # Another engine's /metrics: a fresh registry, as a restarted server has.
            self.metrics = engine_metrics(config.engine, KV_CACHE_SEQUENCES * config.max_model_len)
        self.metrics.kv_cache_tokens = KV_CACHE_SEQUENCES * config.max_model_len
        self.metrics.add_model(config.model)
        return config

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET or POST (the handler refuses other methods with 501)."""
        exchange = _Exchange(handler, self.stopping)
        url = urlsplit(handler.path)
        path = url.path
        if handler.command == "POST":
            # Read the body first, whatever the path, so the connection stays in sync.
            body = exchange.read_body()
            if body is None:
                return
            if path in ENDPOINTS:
                stamped = kernel_stamps.last_receive_ns()
                received = time.perf_counter_ns() if stamped is None else stamped
                self._completion(exchange, path, body, received, stamped is not None)
            elif path == "/sim/config":
                self._update_config(exchange, body)
            elif path in _GET_PATHS or path.startswith(_REQUEST_PREFIX):
                exchange.not_allowed()
            else:
                exchange.not_found()
        elif path == "/v1/models":
            config = self.config
            permission_id = "modelperm-" + self._hex16()
            created = int(time.time())
            body = models_body(
                config.model, config.max_model_len, created, permission_id, config.adapter_names
            )
            exchange.reply_json(200, body)
        elif path == "/health":
            exchange.reply(200, b"", "application/json")
        elif path == self.metrics.metrics_path:
            delay = self.config.metrics_delay
            if delay > 0 and self.metrics.busy():
                self.stopping.wait(delay)  # busy generating, as vLLM's event loop is
            exchange.reply(200, self.metrics.render(), CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/sim/config":
            exchange.reply_json(200, dumps(self.config.to_dict()))
        elif path.startswith(_REQUEST_PREFIX):
            self._request_record(exchange, path[len(_REQUEST_PREFIX) :], url.query)
        elif path in ENDPOINTS:
            exchange.not_allowed()
        else:
            exchange.not_found()

    def _hex16(self) -> str:
        with self._lock:
            return f"{self._rng.getrandbits(64):016x}"

    def _completion(
        self, exchange: _Exchange, endpoint: str, body: bytes, received_ns: int, kernel: bool
    ) -> None:
        config = self.config
        try:
            plan = plan_request(endpoint, body, config)
            forced = exchange.handler.headers.get(FAULT_HEADER)
            fault = _forced_fault(forced, plan.stream) if forced else self._draw_fault(config)
        except ApiError as error:
            exchange.reply_json(error.status, error.body_for(endpoint))
            return
        if not plan.stream and fault not in _NON_STREAM_FAULTS:
            fault = "none"  # stream faults do not apply to a single JSON body
        # As vLLM names them (it serves Messages through chat, hence chatcmpl- there too).
        prefix = {COMPLETIONS_ENDPOINT: "cmpl-", RESPONSES_ENDPOINT: "resp_"}.get(
            endpoint, "chatcmpl-"
        )
        with self._lock:
            request_rng = random.Random(self._rng.getrandbits(64))
        headers = exchange.handler.headers
        # vLLM names the request after the client's X-Request-Id when there is one.
        request_id = (headers.get("X-Request-Id") or "").strip()[:MAX_REQUEST_ID] or None
        traceparent = headers.get("traceparent")
        trace = RequestTrace(
            response_id=prefix + (request_id or f"{request_rng.getrandbits(64):016x}"),
            request_id=request_id,
            traceparent=traceparent,
            endpoint=endpoint,
            model=plan.model,
            fault=fault,
            stream=plan.stream,
            received_ns=received_ns,
            prompt_tokens=plan.prompt_tokens,
            clock_stamps=0 if kernel else 1,
        )
        self.records.add(trace)
        conn = exchange.conn
        reusable = False
        try:
            if fault in ("http_500", "http_429"):
                reusable = _send_http_fault(conn, trace, fault, endpoint)
            elif fault == "hang":
                self._hang(conn, trace, plan.engine_model, config.stall_seconds)
            else:
                generation = Generation(
                    conn=conn,
                    plan=plan,
                    config=config,
                    fault=fault,
                    rng=request_rng,
                    trace=trace,
                    metrics=self.metrics,
                    created=int(time.time()),
                    on_span=self.send_span if config.otlp_traces_endpoint else None,
                )
                generation.run()
                reusable = generation.reusable
        finally:
            trace.complete()
            if not reusable:
                exchange.handler.close_connection = True

    def _draw_fault(self, config: SimulatorConfig) -> str:
        """One uniform draw per request against the cumulative fault probabilities."""
        with self._lock:
            draw = self._rng.random()
        cumulative = 0.0
        for fault in FAULTS:
            cumulative += config.fault_probability(fault)
            if draw < cumulative:
                return fault
        return "buffered" if config.buffered else "none"

    def _hang(self, conn: Connection, trace: RequestTrace, model: str, seconds: float) -> None:
        """Never answer: the request sits in the queue until the client gives up."""
        self.metrics.waiting_started(model)
        try:
            conn.sleep_until(trace.received_ns + round(seconds * 1e9))
        except ClientGone:
            trace.client_disconnected()
        except ServerStopping:
            pass
        finally:
            self.metrics.waiting_ended(model)

    def _update_config(self, exchange: _Exchange, body: bytes) -> None:
        try:
            changes = json.loads(body)
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings to change")
            config = self.reconfigure(changes)
        except ValueError as error:  # JSONDecodeError is a ValueError too
            exchange.reply_json(400, error_body(str(error), "BadRequestError", None, 400))
            return
        exchange.reply_json(200, dumps(config.to_dict()))

    def _request_record(self, exchange: _Exchange, response_id: str, query: str) -> None:
        # ?wait=SECONDS: how long to wait for a request still being served (default 1).
        values = parse_qs(query).get("wait", ["1"])
        try:
            wait = min(max(float(values[0]), 0.0), 30.0)
        except ValueError:
            exchange.reply_json(
                400, error_body("wait must be a number", "BadRequestError", "wait", 400)
            )
            return
        record = self.records.get(response_id, wait)
        if record is None:
            message = f"no request with id {response_id!r} is on record"
            exchange.reply_json(404, error_body(message, "NotFoundError", None, 404))
            return
        exchange.reply_json(200, dumps(record.to_dict()))


def _forced_fault(name: str, stream: bool) -> str:
    fault = name.strip().lower()
    if fault not in FORCEABLE_FAULTS:
        raise ApiError(
            400,
            f"{FAULT_HEADER}: unknown fault {name!r}; known: {', '.join(FORCEABLE_FAULTS)}",
            "BadRequestError",
            None,
        )
    if not stream and fault not in _NON_STREAM_FAULTS:
        raise ApiError(
            400,
            f"{FAULT_HEADER}: fault {fault!r} needs a streaming request (stream: true)",
            "BadRequestError",
            None,
        )
    return fault


def _send_http_fault(conn: Connection, trace: RequestTrace, fault: str, endpoint: str) -> bool:
    """An error status with the endpoint's JSON error body; True if it was sent."""
    if fault == "http_429":
        status, error_type, extra = 429, "RateLimitError", [("retry-after", "1")]
        message = "Too many requests (injected by the simulator)"
    else:
        status, error_type, extra = 500, "InternalServerError", []
        message = "Internal server error (injected by the simulator)"
    body = error_body_for(endpoint, message, error_type, None, status)
    try:
        ns = conn.send(response(status, body, "application/json", extra), trace)
    except ClientGone:
        trace.client_disconnected()
        return False
    except ServerStopping:
        return False
    trace.status_sent(status, ns)
    return True


class _Exchange:
    """One HTTP request on the handler, with small helpers to answer it."""

    def __init__(self, handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        self.handler = handler
        self.conn = Connection(handler.connection, stopping)

    def read_body(self) -> bytes | None:
        """The request body, or None after having answered (or lost) the request."""
        headers = self.handler.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self.handler.close_connection = True
            message = "a chunked request body is not supported; send Content-Length"
            self.reply_json(411, error_body(message, "BadRequestError", None, 411))
            return None
        try:
            length = int(headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self.handler.close_connection = True
            self.reply_json(400, error_body("bad Content-Length", "BadRequestError", None, 400))
            return None
        if length > _MAX_BODY_BYTES:
            self.handler.close_connection = True
            message = f"request body over {_MAX_BODY_BYTES} bytes"
            self.reply_json(413, error_body(message, "BadRequestError", None, 413))
            return None
        body = self.handler.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.handler.close_connection = True
            return None
        return body

    def reply_json(self, status: int, body: bytes) -> None:
        self.reply(status, body, "application/json")

    def not_found(self) -> None:
        self.reply_json(404, dumps({"detail": "Not Found"}))

    def not_allowed(self) -> None:
        self.reply_json(405, dumps({"detail": "Method Not Allowed"}))

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        extra = [("connection", "close")] if self.handler.close_connection else []
        try:
            self.conn.send(response(status, body, content_type, extra))
        except (ClientGone, ServerStopping):
            self.handler.close_connection = True
