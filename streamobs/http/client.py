"""One HTTP/1.1 exchange on a connection of its own: resolve, connect, TLS, send, head.

The one HTTP stack of streamobs: the prober, model discovery, the engine collectors and
the doctor all go through ``open_exchange``. Every phase has a deadline on the clock
(``Timeouts``): name resolution runs on a helper thread the exchange stops waiting for, and
every socket call is bounded by what is left, so no server behaviour (a byte a second, 1xx
forever, a silent resolver) keeps an exchange past its deadlines. ``request_sent`` is the
kernel's transmit stamp of the request's last byte, so nothing the client does before the
request is on the wire counts as latency.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from urllib.parse import urlsplit

from streamobs.http.channel import Channel, PlainChannel, SendStamp, TLSChannel
from streamobs.http.errors import Deadline, HTTPFailure, Kind, Phase, os_failure
from streamobs.http.response import Response, read_head

_log = logging.getLogger(__name__)

AddressInfo = list[tuple[int, tuple[str, int] | tuple[str, int, int, int]]]
Resolver = Callable[[str, int], AddressInfo]
# Lookups still running after their exchange gave up on them: a hung resolver costs at
# most this many threads, and further exchanges fail fast instead of piling up.
MAX_PENDING_LOOKUPS = 16
_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``connect`` covers resolution, TCP and TLS; ``headers`` counts from the
    request being sent; ``total`` from the start of the exchange."""

    connect: float = 5.0
    headers: float = 30.0
    total: float = 120.0

    def __post_init__(self) -> None:
        require_seconds(self, ("connect", "headers", "total"))


def require_seconds(
    owner: object, names: tuple[str, ...], error: type[ValueError] = ValueError
) -> None:
    """Every named attribute a finite, positive number of seconds, or ``error``."""
    for name in names:
        value = getattr(owner, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise error(f"timeout {name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    body: bytes = field(default=b"", repr=False)


def system_resolver(host: str, port: int) -> AddressInfo:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [
        (family, address)
        for family, _type, _proto, _name, address in infos
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address[0], str)
    ]


def _resolve(host: str, port: int, deadline: Deadline, resolver: Resolver) -> AddressInfo:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        return [(family, (host, port))]
    if not _lookups.acquire(blocking=False):
        raise HTTPFailure(Phase.DNS, Kind.TIMEOUT, "name resolution is hanging for other requests")
    answer: list[AddressInfo] = []
    failure: list[OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(resolver(host, port))
        except OSError as exc:
            failure.append(exc)
        finally:
            done.set()
            _lookups.release()

    threading.Thread(target=lookup, name="streamobs-resolve", daemon=True).start()
    if not done.wait(max(deadline.remaining_ns(), 0) / 1e9):
        raise HTTPFailure(Phase.DNS, Kind.TIMEOUT, f"name resolution of {host} timed out")
    if failure:
        reason = failure[0].strerror or str(failure[0]) or "failed"
        raise HTTPFailure(Phase.DNS, Kind.ERROR, f"cannot resolve {host}: {reason}")
    if not answer or not answer[0]:
        raise HTTPFailure(Phase.DNS, Kind.ERROR, f"cannot resolve {host}: no address")
    return answer[0]


def _connect(addresses: AddressInfo, deadline: Deadline) -> socket.socket:
    last: HTTPFailure | None = None
    for family, address in addresses:
        remaining = deadline.remaining_ns()
        if remaining <= 0:
            raise deadline.expired()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(remaining / 1e9)
            sock.connect(address)
            return sock
        except TimeoutError:
            sock.close()
            last = deadline.expired()
        except OSError as exc:
            sock.close()
            last = os_failure(Phase.CONNECT, exc)
    raise last or HTTPFailure(Phase.CONNECT, Kind.ERROR, "no address to connect to")


_contexts: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(verify: bool) -> ssl.SSLContext:
    """One context per verification setting and CA store named in the environment
    (SSL_CERT_FILE / SSL_CERT_DIR, read when a context is made): loading it costs
    milliseconds, and a store named later must not be shadowed by the first one."""
    key = (verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            _contexts[key] = context
        return context


def _head_bytes(request: Request, host: str, port: int, default_port: int, path: str) -> bytes:
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:
        authority += f":{port}"
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {authority}"]
    names = {name.lower() for name in request.headers}
    for name, value in request.headers.items():
        # Checked one by one: a line break in a value would smuggle in a header of its own.
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise HTTPFailure(Phase.SEND, Kind.ERROR, "a request header holds a line break")
        lines.append(f"{name}: {value}")
    if any(c in line for line in lines[:2] for c in "\r\n\0"):
        raise HTTPFailure(Phase.SEND, Kind.ERROR, "the URL holds a line break")
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    if "connection" not in names:
        lines.append("Connection: close")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise HTTPFailure(
            Phase.SEND, Kind.ERROR, "a request header holds a character HTTP cannot carry"
        ) from None


@dataclass(slots=True)
class Phases:
    """What the exchange has done so far, on the ``perf_counter_ns`` timeline."""

    start_ns: int
    dns_ns: int | None = None  # durations of their phase
    connect_ns: int | None = None
    tls_ns: int | None = None
    sent: SendStamp | None = None  # the request's last byte leaving this host
    tls_version: str | None = None


class Exchange:
    """One request and its response; ``close()`` (or leaving the ``with``) closes the
    connection, which is what a client that gives up does."""

    def __init__(
        self,
        request: Request,
        timeouts: Timeouts,
        *,
        verify_tls: bool = True,
        resolver: Resolver = system_resolver,
        start_ns: int | None = None,
    ) -> None:
        self.request = request
        self.timeouts = timeouts
        self.phases = Phases(time.perf_counter_ns() if start_ns is None else start_ns)
        self.total = Deadline(timeouts.total, Phase.BODY, self.phases.start_ns)
        self.channel: Channel | None = None
        self.response: Response | None = None
        self._verify_tls = verify_tls
        self._resolver = resolver

    def open(self) -> Response:
        """Connect, send the request and read the response head."""
        self.send()
        return self.receive_head()

    def send(self) -> None:
        """Resolve, connect, handshake and send the request, without waiting for an answer."""
        try:
            self._send()
        except BaseException:
            self.close()
            raise

    def receive_head(self) -> Response:
        """The response's status line and headers (once; later calls return the same)."""
        if self.response is not None:
            return self.response
        channel, sent = self.channel, self.phases.sent
        assert channel is not None and sent is not None, "send() first"
        headers = self._within_total(Deadline(self.timeouts.headers, Phase.HEADERS, sent.sent_ns))
        try:
            self.response = read_head(channel, headers)
        except BaseException:
            self.close()
            raise
        self.phases.sent = channel.send_stamp()  # a transmit stamp queued late is here by now
        _log.debug(
            "%s %s: %s %d %s", self.request.method, self.request.url,
            self.response.version, self.response.status, self.response.reason,
        )  # fmt: skip
        return self.response

    def answered(self) -> bool:
        """Whether the server has sent anything (or closed), without reading it."""
        if self.response is not None or self.channel is None:
            return True
        raw = self.channel.raw if isinstance(self.channel, TLSChannel) else self.channel
        readable, _, _ = select.select([raw.sock], [], [], 0)
        return bool(readable)

    def _send(self) -> None:
        parts = urlsplit(self.request.url)
        host = parts.hostname or ""
        secure = parts.scheme == "https"
        default_port = 443 if secure else 80
        try:
            port = parts.port or default_port
        except ValueError:
            raise HTTPFailure(Phase.CONNECT, Kind.ERROR, "bad port in the URL") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = _head_bytes(self.request, host, port, default_port, path)
        phases = self.phases
        connect = self._within_total(Deadline(self.timeouts.connect, Phase.CONNECT))
        began = time.perf_counter_ns()
        addresses = _resolve(host, port, connect.as_phase(Phase.DNS), self._resolver)
        resolved = time.perf_counter_ns()
        phases.dns_ns = resolved - began
        sock = _connect(addresses, connect)
        connected = time.perf_counter_ns()
        phases.connect_ns = connected - resolved
        plain = PlainChannel(sock)
        channel: Channel = plain
        self.channel = channel
        if secure:
            tls = TLSChannel(plain, tls_context(self._verify_tls), host)
            self.channel = channel = tls
            tls.handshake(connect.as_phase(Phase.TLS))
            phases.tls_ns = time.perf_counter_ns() - connected
            phases.tls_version = tls.version
        send = self._within_total(Deadline(self.timeouts.headers, Phase.SEND))
        phases.sent = channel.send(head + self.request.body, send)

    def _within_total(self, deadline: Deadline) -> Deadline:
        if self.total.end_ns < deadline.end_ns:
            deadline.end_ns = self.total.end_ns  # the phase keeps its name: say where it hung
        return deadline

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def __enter__(self) -> Exchange:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def fetch(
    request: Request,
    timeouts: Timeouts,
    *,
    max_bytes: int,
    verify_tls: bool = True,
    resolver: Resolver = system_resolver,
) -> tuple[Response, bytes]:
    """A whole (decoded, bounded) response; the connection is closed afterwards."""
    with Exchange(request, timeouts, verify_tls=verify_tls, resolver=resolver) as exchange:
        response = exchange.open()
        return response, response.read_all(exchange.total, max_bytes)
