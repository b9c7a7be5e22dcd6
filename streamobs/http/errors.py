"""What can go wrong on one exchange, said once: the phase it happened in and its kind."""

from __future__ import annotations

import enum
import ssl
import time


class Phase(str, enum.Enum):
    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    SEND = "send"
    HEADERS = "headers"
    BODY = "body"


class Kind(str, enum.Enum):
    TIMEOUT = "timeout"
    REFUSED = "refused"
    CLOSED = "closed"  # the peer closed or reset the connection
    MALFORMED = "malformed"  # bytes that are not HTTP, bad framing, undecodable body
    TOO_LARGE = "too_large"
    TLS = "tls"
    ERROR = "error"  # any other OS-level failure


class HTTPFailure(Exception):
    """One exchange failed; ``str()`` is one human line with no URL, header or secret."""

    def __init__(self, phase: Phase, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.phase = phase
        self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0])


class Deadline:
    """A point on the ``perf_counter_ns`` clock; failing it is a timeout of ``phase``."""

    __slots__ = ("end_ns", "phase", "seconds")

    def __init__(self, seconds: float, phase: Phase, start_ns: int | None = None) -> None:
        start = time.perf_counter_ns() if start_ns is None else start_ns
        self.seconds = seconds
        self.end_ns = start + int(seconds * 1e9)
        self.phase = phase

    def as_phase(self, phase: Phase) -> Deadline:
        """The same point in time, failing as a timeout of ``phase``."""
        other = Deadline(0, phase)
        other.seconds, other.end_ns = self.seconds, self.end_ns
        return other

    def remaining_ns(self) -> int:
        return self.end_ns - time.perf_counter_ns()

    def expired(self) -> HTTPFailure:
        return HTTPFailure(self.phase, Kind.TIMEOUT, f"{self.phase.value} timed out")


def os_failure(phase: Phase, exc: OSError) -> HTTPFailure:
    """An OS error as one line: 'connection refused', 'connection reset by peer', ..."""
    if isinstance(exc, ssl.SSLError):
        return HTTPFailure(Phase.TLS, Kind.TLS, f"TLS error: {tls_reason(exc)}")
    if isinstance(exc, ConnectionRefusedError):
        return HTTPFailure(phase, Kind.REFUSED, "connection refused")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return HTTPFailure(phase, Kind.CLOSED, "connection reset by peer")
    reason = exc.strerror or type(exc).__name__
    return HTTPFailure(phase, Kind.ERROR, reason[:1].lower() + reason[1:])


def tls_reason(exc: ssl.SSLError) -> str:
    """The library's own reason ('CERTIFICATE_VERIFY_FAILED'), with its verify message."""
    reason = exc.reason or type(exc).__name__
    verify = getattr(exc, "verify_message", None)
    return f"{reason} ({verify})" if verify else str(reason)
