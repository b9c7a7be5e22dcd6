"""A loopback OpenAI-compatible server that records every request's headers and, in
``echo`` mode, sends them all back in its error text (as careless gateways do). With
``basic_auth=(user, password)`` it answers 401 (and a ``WWW-Authenticate`` challenge) to
every request without those credentials, as a gateway behind ``auth_basic`` does."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"content":"one"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":" two"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
    b"data: [DONE]\n\n"
)


class EchoServer:
    def __init__(
        self, mode: str = "ok", model: str = "m", basic_auth: tuple[str, str] | None = None
    ) -> None:
        self.mode = mode
        self.model = model
        self.authorization: str | None = None
        if basic_auth is not None:
            token = base64.b64encode(":".join(basic_auth).encode()).decode()
            self.authorization = "Basic " + token
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._record(self)
                if owner.mode == "echo":
                    self._send(401, owner._echo(self), "application/json")
                    return
                if not self._authorised():
                    return
                body = json.dumps({"object": "list", "data": [{"id": owner.model}]}).encode()
                self._send(200, body, "application/json")

            def do_POST(self) -> None:
                owner._record(self)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if owner.mode == "echo":
                    self._send(400, owner._echo(self), "application/json")
                    return
                if not self._authorised():
                    return
                self._send(200, _STREAM, "text/event-stream")

            def _authorised(self) -> bool:
                """True, or False once it answered 401 (no or other credentials)."""
                if owner.authorization is None:
                    return True
                if self.headers.get("Authorization") == owner.authorization:
                    return True
                body = b'{"error": {"message": "authentication required"}}'
                self._send(401, body, "application/json", {"WWW-Authenticate": 'Basic realm="llm"'})
                return False

            def _send(
                self,
                status: int,
                body: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append({k.lower(): v for k, v in handler.headers.items()})

    def _echo(self, handler: BaseHTTPRequestHandler) -> bytes:
        seen = {k: v for k, v in handler.headers.items()}
        text = "; ".join(f"{k}: {v}" for k, v in seen.items())
        scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
        if scheme == "Basic":  # and what it carries, decoded, first
            text = f"user:password {base64.b64decode(token).decode()}; {text}"
        return json.dumps(
            {"error": {"message": f"rejected request with headers {text}", "headers": seen}}
        ).encode()

    def headers_seen(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.requests)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
