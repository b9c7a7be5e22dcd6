"""Stamped, deadline-bound byte channels: plain TCP, and TLS run over it in memory.

The socket stays in blocking mode and every call is bounded by the kernel itself
(``SO_RCVTIMEO``/``SO_SNDTIMEO`` set to what is left of the deadline): a blocked read takes
its bytes the moment the thread runs, with no poll-then-read gap in which later segments
could pile up. TLS goes through ``ssl.MemoryBIO``/``SSLObject`` so the socket read that
carried a record is the one stamped, exactly as on plain TCP.

Every read says how far its stamp can be trusted (``ReadStamp``): the kernel stamps the
newest segment of a read, so a read that found bytes already queued may hold some that
arrived earlier. Its ``spread_ns`` bounds that: for a read that found data waiting, back
to when the previous read emptied the queue; for a read that blocked, the run-queue wait
between the bytes' arrival and the thread running (it woke on the first of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from streamobs.http import stamps
from streamobs.http.errors import Deadline, HTTPFailure, Kind, Phase, os_failure, tls_reason
from streamobs.http.runqueue import RunQueueClock

RAW_READ_BYTES = 256 * 1024
# From the thread running again to the kernel copying the bytes out: a few microseconds
# in which one more segment could join the read.
WAKE_SLACK_NS = 20_000
# A kernel stamp further from our own clock than this means the clock was stepped.
_MAX_KERNEL_LAG_NS = 10_000_000_000
# A stamp may convert this far past our own later clock read (the clocks' tie is that close).
_TIE_SLACK_NS = stamps.TIGHT_PAIR_NS
_TIMEVAL = struct.Struct("ll")
# struct tcp_info: tcpi_bytes_received (u64) and tcpi_data_segs_in (u32), Linux 4.6+.
_TCP_INFO_BYTES = 160
_BYTES_RECEIVED = struct.Struct("Q")
_DATA_SEGS_IN = struct.Struct("I")


@dataclass(frozen=True, slots=True)
class ReadStamp:
    """When one read's bytes arrived, on the ``perf_counter_ns`` timeline."""

    arrival_ns: int  # the newest bytes of the read (kernel receive stamp when ``kernel``)
    spread_ns: int  # the read's oldest bytes may have arrived up to this much earlier
    tail_exact: bool  # the read's last byte arrived at ``arrival_ns`` exactly
    lateness_ns: int  # from ``arrival_ns`` to this process having the bytes
    kernel: bool  # False: no kernel stamp; ``arrival_ns`` is a clock read after the call
    # TCP data segments that carried the read's bytes (None: not known exactly). Many
    # events from one segment were sent together, however late the reader was.
    segments: int | None = None


@dataclass(frozen=True, slots=True)
class SendStamp:
    """When the last byte of a send left this host."""

    sent_ns: int
    error_ns: int  # 0 for a kernel transmit stamp; else the length of the send call
    kernel: bool


def _timeval(nanoseconds: int) -> bytes:
    nanoseconds = max(nanoseconds, 1_000_000)  # 0 would mean "no timeout"
    return _TIMEVAL.pack(nanoseconds // 1_000_000_000, (nanoseconds % 1_000_000_000) // 1000)


class PlainChannel:
    """A connected TCP socket; owns and closes it."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(None)  # blocking: the kernel enforces each call's deadline
        self.sock = sock
        self.kernel_stamps = stamps.enable(sock)
        self._runqueue = RunQueueClock()
        self._sent_bytes = 0
        self._pending_key: int | None = None
        self._provisional: SendStamp | None = None
        self._lower_ns = time.perf_counter_ns()
        self._last_arrival = 0
        self._read_bytes = 0
        self._segments_mark = 0
        self._segments_exact = True

    # -- sending --------------------------------------------------------------------
    def send(self, data: bytes, deadline: Deadline) -> SendStamp:
        remaining = deadline.remaining_ns()
        if remaining <= 0:
            raise deadline.expired()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(remaining))
            before = time.perf_counter_ns()
            self._lower_ns = before
            self.sock.sendall(data)
            after = time.perf_counter_ns()
        except (BlockingIOError, TimeoutError):
            raise deadline.expired() from None
        except OSError as exc:
            raise os_failure(deadline.phase, exc) from None
        self._sent_bytes += len(data)
        self._provisional = SendStamp(after, after - before, kernel=False)
        self._pending_key = (self._sent_bytes - 1) & 0xFFFFFFFF if self.kernel_stamps else None
        return self.send_stamp()

    def send_stamp(self) -> SendStamp:
        """The last send's stamp: the kernel's once it is queued (it usually is by the time
        ``send`` returns; asking again later picks up one that came after)."""
        assert self._provisional is not None, "nothing was sent"
        if self._pending_key is None:
            return self._provisional
        try:
            found = stamps.transmit_stamps(self.sock)
        except OSError:
            found = []
        for key, realtime_ns in found:
            if key == self._pending_key:
                sent = stamps.to_monotonic(realtime_ns)
                self._provisional = SendStamp(sent, 0, kernel=True)
                self._pending_key = None
        return self._provisional

    # -- receiving ------------------------------------------------------------------
    def recv(self, limit: int, deadline: Deadline) -> tuple[bytes, ReadStamp]:
        """At most one socket read of up to ``limit`` bytes; b"" at end of stream."""
        while True:
            remaining = deadline.remaining_ns()
            if remaining <= 0:
                raise deadline.expired()
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(remaining))
                waited_before = self._runqueue.wait_ns()
                called = time.perf_counter_ns()
                data, ancillary, _flags, _address = self.sock.recvmsg(limit, stamps.ANCILLARY_BYTES)
            except (BlockingIOError, TimeoutError, InterruptedError):
                continue  # the kernel's timeout: the loop re-checks the deadline
            except OSError as exc:
                raise os_failure(deadline.phase, exc) from None
            stamp = self._stamp(data, limit, ancillary, waited_before, called)
            if data:
                self._read_bytes += len(data)
                stamp = dataclasses.replace(stamp, segments=self._segments())
            return data, stamp

    def _segments(self) -> int | None:
        """Data segments that arrived since the last read, when that is exactly this read's
        bytes: nothing may have arrived after the read and before the kernel was asked."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
        except (OSError, AttributeError):
            return None
        if len(info) < _TCP_INFO_BYTES:
            return None
        (received,) = _BYTES_RECEIVED.unpack_from(info, 128)
        (segments,) = _DATA_SEGS_IN.unpack_from(info, 152)
        count = (segments - self._segments_mark) & 0xFFFFFFFF
        exact = self._segments_exact and received == self._read_bytes
        self._segments_mark = segments
        # Bytes still queued were counted now and will be read next: neither read is exact.
        self._segments_exact = received == self._read_bytes
        return count if exact else None

    def _stamp(
        self,
        data: bytes,
        limit: int,
        ancillary: list[tuple[int, int, bytes]],
        waited_before: int | None,
        called: int,
    ) -> ReadStamp:
        returned = time.perf_counter_ns()
        realtime = stamps.receive_stamp(ancillary) if data else None
        kernel = None if realtime is None else stamps.to_monotonic(realtime)
        if kernel is None or not -_TIE_SLACK_NS <= returned - kernel < _MAX_KERNEL_LAG_NS:
            arrival = max(returned, self._last_arrival)
            self._last_arrival = arrival
            self._lower_ns = called
            return ReadStamp(arrival, returned - called, False, 0, kernel=False)
        kernel = min(kernel, returned)  # within the clocks' tie, not after we had the bytes
        if kernel >= called:  # the read was waiting when the bytes came: it woke on them
            waited_after = self._runqueue.wait_ns()
            spread = kernel - called
            if waited_before is not None and waited_after is not None:
                spread = min(spread, waited_after - waited_before + WAKE_SLACK_NS)
        else:  # the bytes were queued before we asked: they came after the last read
            spread = kernel - self._lower_ns
        full = len(data) >= limit
        if not full:
            self._lower_ns = max(called, kernel)
        arrival = max(kernel, self._last_arrival)
        self._last_arrival = arrival
        return ReadStamp(arrival, max(spread, 0), not full, returned - kernel, kernel=True)

    def close(self) -> None:
        self._runqueue.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # a FIN now: the server stops generating
        self.sock.close()


class TLSChannel:
    """TLS over a ``PlainChannel`` through memory BIOs: same stamps, same deadlines."""

    def __init__(self, raw: PlainChannel, context: ssl.SSLContext, server_hostname: str) -> None:
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._stamp: ReadStamp | None = None
        self._eof = False

    @property
    def kernel_stamps(self) -> bool:
        return self.raw.kernel_stamps

    def handshake(self, deadline: Deadline) -> None:
        while True:
            try:
                self._ssl.do_handshake()
                self._flush(deadline)
                return
            except ssl.SSLWantReadError:
                self._flush(deadline)
                self._fill(deadline, Phase.TLS)
            except ssl.SSLError as exc:
                message = f"TLS handshake failed: {tls_reason(exc)}"
                raise HTTPFailure(Phase.TLS, Kind.TLS, message) from None

    @property
    def version(self) -> str | None:
        return self._ssl.version()

    def send(self, data: bytes, deadline: Deadline) -> SendStamp:
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            raise HTTPFailure(deadline.phase, Kind.TLS, f"TLS error: {tls_reason(exc)}") from None
        return self._flush(deadline) or self.raw.send_stamp()

    def send_stamp(self) -> SendStamp:
        return self.raw.send_stamp()

    def recv(self, limit: int, deadline: Deadline) -> tuple[bytes, ReadStamp]:
        """The plaintext of the records one socket read completed (up to ``limit``)."""
        out = bytearray()
        while True:
            try:
                while len(out) < limit:
                    piece = self._ssl.read(limit - len(out))
                    if not piece:
                        break
                    out += piece
                if out or self._eof:
                    return self._result(out, full=len(out) >= limit)
            except ssl.SSLWantReadError:
                if out:
                    return self._result(out, full=False)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True  # close_notify, or a close without one: the end either way
                return self._result(out, full=False)
            except ssl.SSLError as exc:
                message = f"TLS error: {tls_reason(exc)}"
                raise HTTPFailure(deadline.phase, Kind.TLS, message) from None
            self._fill(deadline, deadline.phase)
            self._flush(deadline)  # key updates and alerts the records asked for

    def _result(self, out: bytearray, full: bool) -> tuple[bytes, ReadStamp]:
        stamp = self._stamp
        if stamp is None:  # nothing was read yet (EOF straight away)
            now = time.perf_counter_ns()
            stamp = ReadStamp(now, 0, False, 0, kernel=False)
        if full and stamp.tail_exact:
            stamp = dataclasses.replace(stamp, tail_exact=False)
        return bytes(out), stamp

    def _fill(self, deadline: Deadline, phase: Phase) -> None:
        data, stamp = self.raw.recv(RAW_READ_BYTES, deadline)
        self._stamp = stamp
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
            if phase is Phase.TLS:
                message = "connection closed during the TLS handshake"
                raise HTTPFailure(Phase.TLS, Kind.CLOSED, message)

    def _flush(self, deadline: Deadline) -> SendStamp | None:
        pending = self._outgoing.read()
        return self.raw.send(pending, deadline) if pending else None

    def close(self) -> None:
        self.raw.close()


Channel = PlainChannel | TLSChannel
