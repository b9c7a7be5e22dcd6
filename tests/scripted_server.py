"""A loopback TCP server that replays exact bytes, for failure modes no real server offers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from tests.fixtures import FIXTURES

Script = Callable[[socket.socket], None]

SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def fixture_response(name: str) -> bytes:
    """A captured ``.headers`` file (LF line ends) plus its ``.body``, as sent on the wire."""
    head = (FIXTURES / f"{name}.headers").read_bytes().replace(b"\r\n", b"\n").rstrip(b"\n")
    head = head.replace(b"\n", b"\r\n")
    return head + b"\r\n\r\n" + (FIXTURES / f"{name}.body").read_bytes()


def stream_fixture(name: str, delay: float = 0.0) -> Script:
    """Send a captured ``.sse`` file event by event, one chunk per event."""
    events = [e + b"\n\n" for e in (FIXTURES / name).read_bytes().split(b"\n\n") if e]

    def script(conn: socket.socket) -> None:
        conn.sendall(SSE_HEADERS)
        for event in events:
            time.sleep(delay)
            conn.sendall(chunk(event))
        conn.sendall(b"0\r\n\r\n")

    return script


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        part = conn.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body


class ScriptedServer:
    def __init__(self, script: Script, read_request: bool = True) -> None:
        self.script = script
        self.read_request = read_request
        self.requests: list[bytes] = []
        self.closed_by_client = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> ScriptedServer:
        self._accept.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._accept.join()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.read_request:
                self.requests.append(read_request(conn))
            with contextlib.suppress(OSError):
                self.script(conn)
            self._wait_for_client_close(conn)

    def _wait_for_client_close(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if conn.recv(65536) == b"":
                    self.closed_by_client.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                self.closed_by_client.set()
                return


def silent(conn: socket.socket) -> None:
    """Accept, read the request, answer nothing (the server then waits for the client)."""


def send(*parts: bytes, delay: float = 0.0, then_close: bool = False) -> Script:
    """Send raw parts with a pause before each, then stay silent (or close the socket)."""

    def script(conn: socket.socket) -> None:
        for part in parts:
            time.sleep(delay)
            conn.sendall(part)
        if then_close:
            conn.shutdown(socket.SHUT_RDWR)

    return script


def token_stream(tokens: int, itl: float, ttft: float = 0.0) -> Script:
    """A chat stream of ``tokens`` content events ``itl`` seconds apart, then usage and [DONE]."""

    def event(obj: dict[str, object]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def script(conn: socket.socket) -> None:
        conn.sendall(SSE_HEADERS)
        conn.sendall(chunk(event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})))
        time.sleep(ttft)
        for n in range(tokens):
            if n:
                time.sleep(itl)
            reason = "length" if n == tokens - 1 else None
            delta = {"index": 0, "delta": {"content": f" w{n}"}, "finish_reason": reason}
            conn.sendall(chunk(event({"id": "chatcmpl-x", "choices": [delta]})))
        usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
        conn.sendall(chunk(event({"choices": [], "usage": usage})))
        conn.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    return script
