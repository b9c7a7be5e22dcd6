"""A real nginx started on loopback with a throwaway prefix, proxying to a test upstream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.fixtures import free_port, require_binary

STREAMING_SEED = """
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_cache off;
"""

# The reference configuration shipped for users, included as they would include it.
REFERENCE_CONFIG = (
    Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "streamobs-streaming.conf"
)

GZIP_EVENT_STREAMS = """
    gzip on;
    gzip_types text/event-stream;
    gzip_min_length 0;
    gzip_proxied any;
"""


def include(path: Path) -> str:
    """An include directive for a config snippet, for location_config or server_config."""
    return f"include {path};\n"


class Nginx:
    """``location_config`` goes inside ``location /`` (after proxy_pass); the optional
    ``server_config`` goes at server level, around it, as settings a site already has."""

    def __init__(self, upstream: str, location_config: str, server_config: str = "") -> None:
        self.binary = require_binary("nginx", "/usr/sbin/nginx")
        self.upstream = upstream
        self.location_config = location_config
        self.server_config = server_config
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="streamobs-nginx-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self, prefix: Path) -> str:
        user = "user root;" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {prefix}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{self.port};
{self.server_config}
        location / {{
            proxy_pass {self.upstream};
{self.location_config}
        }}
    }}
}}
"""

    def __enter__(self) -> Nginx:
        prefix = Path(self._dir.name)
        conf = prefix / "nginx.conf"
        conf.write_text(self._config(prefix))
        self._process = subprocess.Popen(
            [self.binary, "-p", str(prefix), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("nginx did not start listening")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._dir.cleanup()
