"""Many vLLM engines' /metrics from one loopback process, for the scale benchmark.

python -m benchmarks.engine_server --port 8123 --text metrics.txt

Every path ``/<engine>/metrics`` answers the same text (a real vLLM capture), so one
process stands in for as many engines as the config names, each at its own URL. The
daemon parses every scrape afresh (it keeps no copy of the last text to compare with), so
unchanged values cost it what changing ones would.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from benchmarks.net import free_port

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def serve(port: int, body: bytes) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if not self.path.endswith("/metrics"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


@contextmanager
def engine_server(text: Path) -> Iterator[str]:
    """The server in its own process; yields its base URL (engines at ``<url>/<name>/metrics``)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.engine_server", "--port", str(port),
         "--text", str(text)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url + "/probe/metrics", timeout=0.5).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.05)
        else:
            raise RuntimeError("the engine server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="vLLM /metrics for many engines")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--text", type=Path, required=True, help="the /metrics text to serve")
    args = parser.parse_args(argv)
    serve(args.port, args.text.read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
