"""Forward every received OTLP trace request, byte for byte, to the user's own endpoint.

Bodies wait in a bounded queue for one sender thread: a full queue drops the body (counted)
instead of waiting, each send is bounded by its timeout, so a dead or slow downstream costs
at most ``queue_size`` bodies of memory and never holds up a receiver, a probe or
``/metrics``. HTTP/protobuf POSTs the bytes to ``.../v1/traces``; gRPC calls
``TraceService/Export`` with them as the request message, unparsed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from streamobs.http.client import Request, Timeouts, fetch
from streamobs.http.errors import HTTPFailure
from streamobs.statelog import StateLog
from streamobs.traces.stats import ForwardStats

log = logging.getLogger(__name__)

GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH = "/v1/traces"
DEFAULT_QUEUE = 256
DEFAULT_TIMEOUT = 10.0
_REPLY_LIMIT = 64 * 1024

ForwardProtocol = Literal["grpc", "http/protobuf"]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where forwarded bodies go: for ``http/protobuf`` the full URL (``.../v1/traces``),
    for ``grpc`` a ``http(s)://host:port`` (plaintext for http) or ``host:port`` (TLS)."""

    protocol: ForwardProtocol
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold credentials
    timeout: float = DEFAULT_TIMEOUT


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _env_headers() -> dict[str, str]:
    raw = _env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or ""
    headers: dict[str, str] = {}
    for part in raw.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            headers[name.strip()] = unquote(value.strip())
    return headers


def resolve_destination(
    protocol: ForwardProtocol,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> Destination:
    """The traces endpoint the OTLP exporters would use for these settings: an explicit
    base ``endpoint`` (``/v1/traces`` appended for HTTP), else
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as it is), else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (as a base), else the SDK's default on localhost; headers and timeout likewise."""
    http = protocol == "http/protobuf"
    if endpoint:
        url = endpoint.rstrip("/") + (HTTP_PATH if http else "")
    elif (signal := _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) is not None:
        url = signal
    elif (base := _env("OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
        url = base.rstrip("/") + (HTTP_PATH if http else "")
    else:
        url = "http://localhost:4318/v1/traces" if http else "http://localhost:4317"
    if timeout is None:
        raw = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        try:
            # The variables are in milliseconds in the current specification.
            timeout = float(raw) / 1000 if raw is not None else DEFAULT_TIMEOUT
        except ValueError:
            timeout = DEFAULT_TIMEOUT
    return Destination(protocol, url, dict(headers) if headers else _env_headers(), timeout)


class _Sender:
    def send(self, body: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _HttpSender(_Sender):
    def __init__(self, destination: Destination) -> None:
        self._url = destination.endpoint
        self._headers = {
            **destination.headers,
            "Content-Type": "application/x-protobuf",
            "User-Agent": "streamobs-traces-forward",
        }
        t = destination.timeout
        self._timeouts = Timeouts(connect=t, headers=t, total=t)

    def send(self, body: bytes) -> None:
        try:
            response, _ = fetch(
                Request("POST", self._url, self._headers, body),
                self._timeouts,
                max_bytes=_REPLY_LIMIT,
            )
        except HTTPFailure as failure:
            raise OSError(failure.message) from None
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status} from {self._url}")


class _GrpcSender(_Sender):
    def __init__(self, destination: Destination) -> None:
        import grpc  # type: ignore[import-untyped]

        self._grpc = grpc
        endpoint = destination.endpoint
        parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
        target = parts.netloc or endpoint
        if parts.scheme == "http":
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        # No serializers: the bytes received are the bytes sent.
        self._export = self._channel.unary_unary(GRPC_METHOD)
        self._metadata = tuple((k.lower(), v) for k, v in destination.headers.items())
        self._timeout = destination.timeout

    def send(self, body: bytes) -> None:
        try:
            self._export(body, timeout=self._timeout, metadata=self._metadata)
        except self._grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            raise OSError(f"gRPC {getattr(code, 'name', code)}") from None

    def close(self) -> None:
        self._channel.close()


class Forwarder:
    """``submit()`` never blocks; ``stop()`` returns within about its timeout."""

    def __init__(self, destination: Destination, queue_size: int = DEFAULT_QUEUE) -> None:
        self.destination = destination
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stats = ForwardStats()
        self._states = StateLog(log)
        self._stopping = threading.Event()
        self._sender: _Sender = (
            _GrpcSender(destination) if destination.protocol == "grpc" else _HttpSender(destination)
        )
        self._thread = threading.Thread(target=self._run, name="traces-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, body: bytes) -> bool:
        if self._stopping.is_set():
            self._add(dropped=1)
            return False
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._add(dropped=1)
            self._states.report(
                "queue", "full", "forwarding received spans: queue full, dropping", "ok"
            )
            return False
        return True

    def stats(self) -> ForwardStats:
        with self._lock:
            return self._stats

    def _add(self, **add: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = ForwardStats(
                s.forwarded + add.get("forwarded", 0),
                s.dropped + add.get("dropped", 0),
                s.failed + add.get("failed", 0),
            )

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                self._sender.send(body)
            except Exception as exc:
                self._add(failed=1)
                self._states.report(
                    "send",
                    str(exc)[:200],
                    f"cannot forward received spans to {self.destination.endpoint}",
                    f"forwarding received spans to {self.destination.endpoint} works again",
                )
                continue
            self._add(forwarded=1)
            self._states.report(
                "send", None, "", f"forwarding spans to {self.destination.endpoint}"
            )

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking bodies; what is still queued is dropped (counted)."""
        self._stopping.set()
        dropped = 0
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    dropped += 1
            except queue.Empty:
                break
        self._add(dropped=dropped)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        self._sender.close()
