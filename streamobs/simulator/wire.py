"""Bytes on the socket: response heads, HTTP/1.1 chunks, and timed, stamped writes."""

from __future__ import annotations

import socket
import struct
import threading
import time
from email.utils import formatdate
from http import HTTPStatus

from streamobs.simulator import kernel_stamps
from streamobs.simulator.records import RequestTrace

SERVER_HEADER = "streamobs-simulator"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
CHUNKED_END = b"0\r\n\r\n"

# Long waits are cut into slices so a departed client or a stopping server is noticed
# within this long (vLLM itself notices a disconnect within about 0.3 s).
_WATCH_INTERVAL_NS = 100_000_000


class ClientGone(Exception):
    """The client closed or reset its connection."""


class ServerStopping(Exception):
    """The simulator is shutting down; abandon the request."""


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and headers, lower-case and in the order uvicorn sends them."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"date: {formatdate(usegmt=True)}",
        f"server: {SERVER_HEADER}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response(
    status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> bytes:
    """A whole response with a Content-Length body, ready for one write."""
    headers = [
        ("content-length", str(len(body))),
        ("content-type", content_type),
        ("vary", "Origin"),
        *(extra or []),
    ]
    return response_head(status, headers) + body


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


class Connection:
    """One accepted client socket, as the code serving a request needs it."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self._sock = sock
        self._stopping = stopping
        self._next_watch_ns = 0

    def send(self, data: bytes, trace: RequestTrace | None = None) -> int:
        """Write all of `data` in one sendall; when its last byte left (the kernel's
        transmit stamp, else perf_counter_ns() right after the call, which ``trace``
        is told of)."""
        try:
            self._sock.sendall(data)
        except OSError as exc:
            if self._stopping.is_set():
                raise ServerStopping from exc
            raise ClientGone from exc
        sent_ns = time.perf_counter_ns()  # read before any wait for the stamp
        stamp = kernel_stamps.last_send_ns(self._sock)
        if stamp is not None:
            return stamp
        if trace is not None:
            trace.clock_stamped()
        return sent_ns

    def peer_closed(self) -> bool:
        """Whether the client has closed its side, without consuming anything it sent."""
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def sleep_until(self, deadline_ns: int) -> None:
        """Sleep to an absolute perf_counter_ns deadline, watching the client meanwhile.

        The last stretch before a deadline is one plain time.sleep, so writes land on
        their deadline; the watch (one non-blocking peek) happens before it.
        """
        while True:
            now = time.perf_counter_ns()
            if now >= self._next_watch_ns:
                if self._stopping.is_set():
                    raise ServerStopping
                if self.peer_closed():
                    raise ClientGone
                self._next_watch_ns = now + _WATCH_INTERVAL_NS
            remaining = deadline_ns - now
            if remaining <= 0:
                return
            if remaining <= _WATCH_INTERVAL_NS:
                time.sleep(remaining / 1e9)
                return
            time.sleep(_WATCH_INTERVAL_NS / 1e9)

    def sleep_for_nobody(self, deadline_ns: int) -> None:
        """Sleep to a deadline whether or not the client is still there (ServerStopping
        still ends it): generating for a client that has gone."""
        while True:
            if self._stopping.is_set():
                raise ServerStopping
            remaining = deadline_ns - time.perf_counter_ns()
            if remaining <= 0:
                return
            time.sleep(min(remaining, _WATCH_INTERVAL_NS) / 1e9)

    def reset(self) -> None:
        """Drop the connection with a TCP RST instead of an orderly FIN."""
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach() leaves the socket object (still referenced by the request handler's
        # files) harmlessly closed; closing the descriptor sends the RST right now.
        socket.close(self._sock.detach())


class Emitter:
    """Writes a chunked SSE response, one event per chunk per sendall, and stamps it.

    With `hold` it keeps everything back and writes the whole response in a single write
    at the end, as a buffering proxy in front of the server would deliver it.
    """

    def __init__(self, conn: Connection, trace: RequestTrace, *, hold: bool) -> None:
        self._conn = conn
        self._trace = trace
        self._hold = hold
        self._held: list[tuple[str, bytes]] = []

    def head(self) -> None:
        head = response_head(
            200,
            [
                ("content-type", SSE_CONTENT_TYPE),
                ("vary", "Origin"),
                ("transfer-encoding", "chunked"),
            ],
        )
        self._write("head", head)

    def comment(self, payload: bytes) -> None:
        self._write("comment", chunk(payload))

    def event(self, payload: bytes) -> None:
        self._write("event", chunk(payload))

    def token(self, payload: bytes) -> None:
        self._write("token", chunk(payload))

    def done(self, payload: bytes) -> None:
        self._write("done", chunk(payload))

    def raw_chunk(self, payload: bytes) -> None:
        """A chunk that is not a whole event (an oversize line sent in pieces)."""
        self._write("raw", chunk(payload))

    def end(self) -> None:
        """The terminating chunk; when holding, the single write of everything."""
        self._write("end", CHUNKED_END)
        if self._hold:
            ns = self._conn.send(b"".join(data for _, data in self._held), self._trace)
            for kind, _ in self._held:
                self._stamp(kind, ns)

    def _write(self, kind: str, data: bytes) -> None:
        if self._hold:
            self._held.append((kind, data))
        else:
            self._stamp(kind, self._conn.send(data, self._trace))

    def _stamp(self, kind: str, ns: int) -> None:
        if kind == "head":
            self._trace.status_sent(200, ns)
        elif kind == "comment":
            self._trace.keepalive_written(ns)
        elif kind in ("event", "token"):
            self._trace.event_written(ns, token=kind == "token")
        elif kind == "done":
            self._trace.done_written(ns)
