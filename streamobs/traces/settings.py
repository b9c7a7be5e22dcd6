"""The trace receiver's settings (config section ``traces_receiver``): off unless an
address is given."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_JOIN_WAIT = 30.0  # vLLM's BatchSpanProcessor exports every 5 s, later when busy
DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_FORWARD_QUEUE = 256


@dataclass(frozen=True, slots=True)
class TracesReceiverSettings:
    """``http_address``: OTLP/HTTP protobuf (POST /v1/traces), ``grpc_address``: OTLP gRPC
    (TraceService/Export), each ``host:port``; neither means no receiver. ``join_wait``:
    how long a finished probe waits for its span. ``forward``: send every received body on
    to the OTLP traces endpoint streamobs exports to, when that export is on."""

    http_address: str | None = None
    grpc_address: str | None = None
    join_wait: float = DEFAULT_JOIN_WAIT
    max_pending: int = DEFAULT_MAX_PENDING
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    read_timeout: float = DEFAULT_READ_TIMEOUT
    forward: bool = True
    forward_queue_size: int = DEFAULT_FORWARD_QUEUE

    @property
    def enabled(self) -> bool:
        return bool(self.http_address or self.grpc_address)


def one_shot_settings(address: str, wait: float) -> TracesReceiverSettings:
    """A receiver for one command's run: ``host:port`` (or ``http://host:port``) serves
    OTLP/HTTP, ``grpc://host:port`` OTLP gRPC; nothing is forwarded. ValueError for
    anything else."""
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    host, colon, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("http", "grpc") or not colon or not host or not port.isdigit():
        raise ValueError(
            f"traces receiver address {address!r}: use host:port (OTLP/HTTP) "
            "or grpc://host:port (OTLP gRPC)"
        )
    where = f"{host}:{port}"
    return TracesReceiverSettings(
        http_address=where if scheme == "http" else None,
        grpc_address=where if scheme == "grpc" else None,
        join_wait=wait + 1.0,  # spans that came early stay until every probe has looked
        forward=False,
    )
