"""requests/urllib3 plumbing that stamps connect and header arrival where they happen.

``session.send`` hides the TCP/TLS connect and the status line behind one call; stamping
around it would fold requests' own bookkeeping into the result. Instead the connection
classes urllib3 uses are subclassed to stamp inside ``connect()`` and ``getresponse()``,
and the probe reads the body with ``read1()``: one socket read per call, so every byte is
stamped when it came off the socket — with the kernel's receive timestamp where Linux
gives one (plain TCP), which no wait for the interpreter lock can delay.
(``iter_content(chunk_size=None)`` reads a body without chunked framing to EOF in one
call, and ``iter_lines()`` holds data back.)
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InsecureRequestWarning
from urllib3.response import BaseHTTPResponse

# Linux's SO_TIMESTAMPNS (35 on x86 and arm; Python's socket module does not name it): the
# kernel stamps data as it arrives, before this process is even scheduled to read it.
_SO_TIMESTAMPNS = 35 if sys.platform == "linux" and platform.machine() in (
    "x86_64", "aarch64", "arm64", "i686", "armv7l"
) else None  # fmt: skip
_TIMESPEC = struct.Struct("qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_MAX_KERNEL_LAG_NS = 1_000_000_000  # a larger gap means a clock step: trust our own stamp


@dataclass
class PhaseClock:
    """Filled in by the connection while one probe's request is in flight."""

    connect_done_ns: int | None = None
    headers_ns: int | None = None
    connection: HTTPConnection | None = None
    # CLOCK_REALTIME of the latest bytes the kernel received for this probe, when it says.
    arrival_realtime_ns: int | None = None
    _last_arrival: int | None = None
    _last_stamp: int = 0

    def received(self) -> int:
        """When the bytes just read arrived, on the ``perf_counter_ns`` timeline.

        With kernel receive timestamps this is when they reached the host: with many
        probes in one process, the wait for the interpreter lock between the kernel and
        this code is not the server's or the network's time. Without them (TLS, other
        systems) it is now, right after the read. Stamps never go backwards: bytes served
        from a buffer filled by an earlier read keep that read's arrival exactly."""
        now = time.perf_counter_ns()
        arrival = self.arrival_realtime_ns
        if arrival is not None and arrival == self._last_arrival:
            return self._last_stamp
        stamp = now
        if arrival is not None:
            lag = time.clock_gettime_ns(time.CLOCK_REALTIME) - arrival
            if 0 <= lag < _MAX_KERNEL_LAG_NS:
                stamp = now - lag
        stamp = max(stamp, self._last_stamp)
        self._last_arrival, self._last_stamp = arrival, stamp
        return stamp

    def set_read_timeout(self, seconds: float) -> None:
        """Bound the next socket read; the probe tightens it as deadlines approach."""
        sock = self.connection.sock if self.connection is not None else None
        if sock is not None:
            sock.settimeout(max(seconds, 0.001))


_active_clock: ContextVar[PhaseClock | None] = ContextVar("streamobs_phase_clock", default=None)


class _KernelStampedSocket(socket.socket):
    """A plain TCP socket whose reads pick up the kernel's receive timestamp."""

    __slots__ = ()  # the same layout as socket.socket, so a socket can become one

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        size, ancillary, _flags, _address = self.recvmsg_into([view], _CMSG_SPACE, flags)
        clock = _active_clock.get()
        if clock is not None:
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                    clock.arrival_realtime_ns = seconds * 1_000_000_000 + nanoseconds
        return int(size)


def _enable_kernel_stamps(sock: socket.socket | None) -> None:
    if _SO_TIMESTAMPNS is None or type(sock) is not socket.socket:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return  # not offered here: stamps come from our own clock after each read
    sock.__class__ = _KernelStampedSocket


class _TimedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _enable_kernel_stamps(self.sock)
        _stamp_connect(self)

    def getresponse(self) -> Any:
        response = super().getresponse()
        _stamp_headers()
        return response


class _TimedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()  # TCP and the TLS handshake
        _stamp_connect(self)

    def getresponse(self) -> Any:
        response = super().getresponse()
        _stamp_headers()
        return response


def _stamp_connect(connection: HTTPConnection) -> None:
    clock = _active_clock.get()
    if clock is not None:
        clock.connect_done_ns = time.perf_counter_ns()
        clock.connection = connection


def _stamp_headers() -> None:
    clock = _active_clock.get()
    if clock is not None:
        clock.headers_ns = clock.received()


class _TimedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TimedHTTPConnection


class _TimedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TimedHTTPSConnection


class _TimedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _TimedHTTPPool,
            "https": _TimedHTTPSPool,
        }


def new_session(verify_tls: bool = True) -> requests.Session:
    """A session for one probe: a fresh connection every time (we measure connect), no
    retries, and no proxy, netrc or CA settings picked up from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = verify_tls
    if not verify_tls:
        # The user chose this explicitly; a warning on every probe would only be noise.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    adapter = _TimedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def activate(clock: PhaseClock) -> object:
    return _active_clock.set(clock)


def deactivate(token: object) -> None:
    _active_clock.reset(token)  # type: ignore[arg-type]


def read_some(response: BaseHTTPResponse, limit: int) -> bytes:
    """At most one socket read (decoded), b"" at end of body."""
    return response.read1(limit, decode_content=True)
