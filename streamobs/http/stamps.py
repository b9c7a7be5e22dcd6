"""Kernel timestamps for one TCP socket: receive stamps of reads, transmit stamps of sends.

Linux stamps a segment in software as it arrives (``SOF_TIMESTAMPING_RX_SOFTWARE``) and as
it is handed to the device (``SOF_TIMESTAMPING_TX_SOFTWARE``). Transmit stamps come back on
the socket's error queue, each with the byte offset of the last byte of the send it belongs
to (``OPT_ID``); ``OPT_TSONLY`` returns the stamp without the payload, which also spares an
unprivileged process the need for ``CAP_NET_RAW``. The stamps are ``CLOCK_REALTIME``;
``to_monotonic`` moves them onto the ``perf_counter_ns`` timeline the rest of a probe uses.

The two clocks are tied by a pair of clock reads, and a thread preempted between the two
reads would move every stamp it converts by the whole preemption (a scheduler tick, 4 ms,
that no lateness measure sees). So the realtime read is bracketed by two monotonic reads
and a pair is used only when the bracket is tight; ``CLOCK_MONOTONIC`` (``perf_counter``
on Linux) runs at the realtime clock's slewed rate, so the difference of a tight pair holds
until the realtime clock is stepped, and a split pair falls back on the last tight one.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

# <linux/net_tstamp.h> and <linux/errqueue.h>; Python's socket module names none of them.
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
_TX_SOFTWARE = 1 << 1
_RX_SOFTWARE = 1 << 3
_SOFTWARE = 1 << 4
_OPT_ID = 1 << 7
_OPT_TSONLY = 1 << 11
FLAGS = _TX_SOFTWARE | _RX_SOFTWARE | _SOFTWARE | _OPT_ID | _OPT_TSONLY
_SO_EE_ORIGIN_TIMESTAMPING = 4
_SCM_TSTAMP_SND = 0
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_RECVERR = ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))

_TIMESPECS = struct.Struct("qqqqqq")  # scm_timestamping: software, (deprecated), hardware
_EXTENDED_ERR = struct.Struct("IBBBBII")  # sock_extended_err
ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPECS.size) if hasattr(socket, "CMSG_SPACE") else 0
_ERRQUEUE_BYTES = ANCILLARY_BYTES + (
    socket.CMSG_SPACE(_EXTENDED_ERR.size + 16) if hasattr(socket, "CMSG_SPACE") else 0
)
_OFFERED = sys.platform == "linux" and hasattr(socket, "MSG_ERRQUEUE")
# Two monotonic reads this close around a realtime read tie the clocks to within half of
# it (unsplit, the three reads take well under a microsecond).
TIGHT_PAIR_NS = 20_000
_FIRST_PAIR_TRIES = 16


_keeper: socket.socket | None = None
_keeper_lock = threading.Lock()


def keep_stamping_on() -> None:
    """Hold one stamping socket for the life of the process. Linux turns receive stamping
    on for the whole host only when a first socket asks, and then later, from a work
    queue: a probe whose socket is the only one would see its first segments unstamped."""
    global _keeper
    with _keeper_lock:
        if _keeper is not None:
            return
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _RX_SOFTWARE | _SOFTWARE)
        except OSError:
            keeper.close()
            return
        _keeper = keeper


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp this socket's reads and sends; False where it will not."""
    if not _OFFERED:
        return False
    keep_stamping_on()
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, FLAGS)
    except OSError:
        return False
    return True


def receive_stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The software receive stamp (``CLOCK_REALTIME`` ns) in a read's ancillary data."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            if seconds or nanoseconds:
                return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def transmit_stamps(sock: socket.socket) -> list[tuple[int, int]]:
    """Drain the error queue: (byte offset of the stamped send's last byte, realtime ns)
    for each software transmit stamp the kernel has queued so far."""
    stamps: list[tuple[int, int]] = []
    if not _OFFERED:
        return stamps
    while True:
        try:
            _data, ancillary, _flags, _address = sock.recvmsg(
                0, _ERRQUEUE_BYTES, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return stamps
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return stamps
            raise
        stamp: int | None = None
        key: int | None = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING:
                stamp = receive_stamp([(level, kind, data)])
            elif (level, kind) in _RECVERR and len(data) >= _EXTENDED_ERR.size:
                _errno, origin, _type, _code, _pad, info, ee_data = _EXTENDED_ERR.unpack_from(data)
                if origin == _SO_EE_ORIGIN_TIMESTAMPING and info == _SCM_TSTAMP_SND:
                    key = ee_data
        if stamp is not None and key is not None:
            stamps.append((key, stamp))


def _realtime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


class ClockTie:
    """``CLOCK_REALTIME`` minus ``perf_counter_ns``, from clock pairs no preemption split."""

    def __init__(
        self,
        monotonic: Callable[[], int] = time.perf_counter_ns,
        realtime: Callable[[], int] = _realtime_ns,
    ) -> None:
        self._monotonic = monotonic
        self._realtime = realtime
        self._offset_ns: int | None = None

    def _pair(self) -> tuple[int, int]:
        """The offsets this pair allows: realtime minus each monotonic read around it (the
        realtime read fell between them, so the true offset lies in between)."""
        before = self._monotonic()
        real = self._realtime()
        after = self._monotonic()
        return real - after, real - before

    def offset_ns(self) -> int:
        """A tight pair taken now (it sees a step of the realtime clock at once), else the
        last tie while a wide pair still allows it; before any, the tightest of a few tries.
        A wide pair that rules the last tie out (the realtime clock was stepped, seen so
        even on a host whose clock reads are never tight) replaces it; a slew moves both
        clocks alike and leaves the tie as it is."""
        low, high = self._pair()
        last = self._offset_ns
        if high - low > TIGHT_PAIR_NS:
            # The last tie is off by up to half a tight width itself: allow that much.
            if last is not None and low - TIGHT_PAIR_NS <= last <= high + TIGHT_PAIR_NS:
                return last
            if last is None:
                for _ in range(_FIRST_PAIR_TRIES):
                    again_low, again_high = self._pair()
                    if again_high - again_low < high - low:
                        low, high = again_low, again_high
                    if high - low <= TIGHT_PAIR_NS:
                        break
        offset = (low + high) // 2
        self._offset_ns = offset
        return offset


_tie = ClockTie()


def to_monotonic(realtime_ns: int) -> int:
    """A ``CLOCK_REALTIME`` stamp on the ``perf_counter_ns`` timeline."""
    return realtime_ns - _tie.offset_ns()


def to_realtime(monotonic_ns: int) -> int:
    """A ``perf_counter_ns`` stamp as wall-clock (``CLOCK_REALTIME``) nanoseconds."""
    return monotonic_ns + _tie.offset_ns()
