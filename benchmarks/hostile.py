"""A hostile model server for the soak: by turns it drips its headers, answers 1xx for
ever, nests JSON deeper than the interpreter's stack, floods tiny events, sends a
decompression bomb as its error body and a status line that is not HTTP."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable

MODES = ("drip_headers", "continue_forever", "deep_json", "tiny_events", "bomb_error", "garbage")
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"


def _compressed_events() -> bytes:
    event = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    return zlib.compress(event * 400_000, 9)


class HostileServer:
    """Loopback TCP server; ``mode`` may change at any time and applies to new requests."""

    def __init__(self) -> None:
        self.mode = MODES[0]
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile", daemon=True)
        self._bomb = gzip.compress(bytes(64 << 20), 9)
        self._events = _compressed_events()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                part = conn.recv(65536)
                if not part:
                    return
                data += part
            self.requests += 1
            self._answers()[self.mode](conn)

    def _answers(self) -> dict[str, Callable[[socket.socket], None]]:
        return {
            "drip_headers": lambda c: self._drip(c, b"HTTP/1.1 200 OK\r\nx-slow: ", b"a", 0.3),
            "continue_forever": lambda c: self._drip(
                c, b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.3, whole=True
            ),
            "deep_json": lambda c: c.sendall(_SSE_HEAD + b"\r\ndata: " + b"[" * 100_000 + b"\n\n"),
            "tiny_events": lambda c: c.sendall(
                _SSE_HEAD
                + b"content-encoding: deflate\r\ncontent-length: %d\r\n\r\n" % len(self._events)
                + self._events
            ),
            "bomb_error": lambda c: c.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n"
                % len(self._bomb)
                + self._bomb
            ),
            "garbage": lambda c: c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n"),
        }

    def _drip(
        self, conn: socket.socket, head: bytes, unit: bytes, every: float, whole: bool = False
    ) -> None:
        conn.sendall(head)
        while not self._stop.is_set():
            time.sleep(every)
            conn.sendall(unit if whole else unit[:1])
