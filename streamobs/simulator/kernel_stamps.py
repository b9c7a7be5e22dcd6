"""The simulator's side of timing truth: kernel stamps of what it receives and writes.

The benchmark compares a client's TTFT with the simulator's own account of the same
request (receipt of the request's last byte to the write of the first token). Clock reads
in the simulator's threads would be as late as its threads are on a loaded machine; the
kernel's receive stamp of the request and transmit stamp of each write are not.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from streamobs.http import stamps

_MAX_AGE_NS = 10_000_000_000  # older (or from the future): a clock step, not a stamp
_LATE_STAMP_NS = 5_000_000  # how long a write waits for its transmit stamp to be queued
_last_receive = threading.local()  # one connection per handler thread


class _StampedSocket(socket.socket):
    """An accepted socket whose reads note the kernel's receive stamp for its thread, and
    whose sends count its bytes: a transmit stamp names the offset of its send's last
    byte, so the count tells which stamp is the latest send's."""

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

    def sendall(self, data: Any, flags: int = 0) -> None:
        super().sendall(data, flags)
        _sent[self.fileno()] = _sent.get(self.fileno(), 0) + memoryview(data).nbytes

    def send(self, data: Any, flags: int = 0) -> int:  # the request handler's own writes
        size = super().send(data, flags)
        _sent[self.fileno()] = _sent.get(self.fileno(), 0) + size
        return size


# Bytes sent on each stamped socket (by descriptor, reset when a socket is stamped): a
# socket's own attributes would change the layout an accepted socket must keep.
_sent: dict[int, int] = {}
# Stamped sockets a send's stamp failed to come for (a device that stamps no transmit, a
# client whose window is shut): their sends do not wait for one until a stamp comes.
_unstamped: set[int] = set()


def enable(sock: socket.socket) -> None:
    """Stamp this accepted socket's reads and writes (before anything is sent on it)."""
    if type(sock) is socket.socket and stamps.enable(sock):
        _sent[sock.fileno()] = 0
        _unstamped.discard(sock.fileno())
        sock.__class__ = _StampedSocket


def _recent(realtime_ns: int | None) -> int | None:
    if realtime_ns is None:
        return None
    mono = stamps.to_monotonic(realtime_ns)
    ago = time.perf_counter_ns() - mono
    return mono if -stamps.TIGHT_PAIR_NS <= ago < _MAX_AGE_NS else None


def last_receive_ns() -> int | None:
    """When the bytes of this thread's latest read arrived (``perf_counter_ns``)."""
    return _recent(getattr(_last_receive, "realtime_ns", None))


def last_send_ns(sock: socket.socket) -> int | None:
    """When the last byte of the latest send on ``sock`` left (``perf_counter_ns``): its
    own transmit stamp, waited for a little when the kernel has not queued it yet (a
    segment the stack sends later, from its own context, is stamped then); None without.
    A socket a stamp failed to come for is not waited on again until one comes."""
    if type(sock) is not _StampedSocket:
        return None
    fd = sock.fileno()
    sent = _sent.get(fd, 0)
    if not sent:
        return None
    key = (sent - 1) & 0xFFFFFFFF
    give_up = time.perf_counter_ns() + (0 if fd in _unstamped else _LATE_STAMP_NS)
    poller: select.poll | None = None
    reported = 0  # what the last poll reported
    while True:
        try:
            found = stamps.transmit_stamps(sock)
        except OSError:
            return None
        if found:
            _unstamped.discard(fd)  # its stamps come, if late: wait for them again
        for stamped_key, realtime_ns in found:
            if stamped_key == key:
                return _recent(realtime_ns)
        remaining = give_up - time.perf_counter_ns()
        # Hung up, or an error of the socket itself (a reset) with no stamp queued: none is
        # coming, and poll would report it at once on every turn.
        if remaining <= 0 or reported & select.POLLHUP or (reported and not found):
            _unstamped.add(fd)
            return None
        if poller is None:
            poller = select.poll()
            poller.register(sock, 0)  # a queued stamp reads as POLLERR, always reported
        events = poller.poll(max(remaining // 1_000_000, 1))
        reported = events[0][1] if events else 0
