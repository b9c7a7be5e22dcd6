"""The simulator's side of timing truth: kernel stamps of what it receives and writes.

The benchmark compares a client's TTFT with the simulator's own account of the same
request (receipt of the request's last byte to the write of the first token). Clock reads
in the simulator's threads would be as late as its threads are on a loaded machine; the
kernel's receive stamp of the request and transmit stamp of each write are not.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from streamobs.http import stamps

_MAX_AGE_NS = 10_000_000_000  # older (or from the future): a clock step, not a stamp
_last_receive = threading.local()  # one connection per handler thread


class _StampedSocket(socket.socket):
    """An accepted socket whose reads note the kernel's receive stamp for its thread."""

    __slots__ = ()  # the layout of socket.socket, so an accepted socket can become one

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        size, ancillary, _flags, _address = self.recvmsg_into([view], stamps.ANCILLARY_BYTES, flags)
        stamp = stamps.receive_stamp(ancillary)
        if stamp is not None:
            _last_receive.realtime_ns = stamp
        return int(size)


def enable(sock: socket.socket) -> None:
    """Stamp this accepted socket's reads and writes (before anything is sent on it)."""
    if type(sock) is socket.socket and stamps.enable(sock):
        sock.__class__ = _StampedSocket


def _recent(realtime_ns: int | None) -> int | None:
    if realtime_ns is None:
        return None
    mono, ago = stamps.to_monotonic(realtime_ns)
    return mono if 0 <= ago < _MAX_AGE_NS else None


def last_receive_ns() -> int | None:
    """When the bytes of this thread's latest read arrived (``perf_counter_ns``)."""
    return _recent(getattr(_last_receive, "realtime_ns", None))


def last_send_ns(sock: socket.socket) -> int | None:
    """When the last byte of the latest send on ``sock`` left (``perf_counter_ns``); the
    newest transmit stamp queued, as every send drains the ones before it."""
    if type(sock) is not _StampedSocket:
        return None
    try:
        found = stamps.transmit_stamps(sock)
    except OSError:
        return None
    if not found:
        return None
    _key, realtime_ns = max(found)
    return _recent(realtime_ns)
