"""The vLLM poller at scale: 300 engines scraped by a bounded pool, not a thread each;
each engine never scraped twice at once; reload keeps unchanged engines' snapshots; stop
is bounded even with a scrape hanging."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streamobs.collectors.engines.poller import SCRAPE_WORKERS, EnginePoller, ScrapeTarget
from streamobs.collectors.engines.settings import EngineCollectorConfig
from tests.fixtures import FIXTURES
from tests.prometheus_server import wait_until

ENGINES = 300


class Engines:
    """Serves the vLLM capture at every path; counts requests per path and how many of a
    path ran at once; ``/hang`` answers only once ``release`` is set."""

    def __init__(self) -> None:
        payload = (FIXTURES / "metrics.txt").read_bytes()
        self.lock = threading.Lock()
        self.requests: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_at_once = 0
        self.release = threading.Event()
        engines = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with engines.lock:
                    engines.requests[self.path] += 1
                    engines.in_flight[self.path] += 1
                    engines.most_at_once = max(engines.most_at_once, engines.in_flight[self.path])
                try:
                    if self.path == "/hang":
                        engines.release.wait(30)
                    time.sleep(0.01)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with engines.lock:
                        engines.in_flight[self.path] -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests[path]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engines() -> Iterator[Engines]:
    served = Engines()
    yield served
    served.stop()


def scrape_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("vllm-"))


def test_three_hundred_engines_share_a_bounded_pool(engines: Engines) -> None:
    targets = [ScrapeTarget(f"e{i}", f"{engines.url}/e{i}", 2.0) for i in range(ENGINES)]
    poller = EnginePoller(targets, EngineCollectorConfig(timeout=2.0))
    poller.start()
    try:
        most_threads = 0

        def scraped(times: int) -> bool:
            nonlocal most_threads
            most_threads = max(most_threads, scrape_threads())
            return all(engines.count(f"/e{i}") >= times for i in range(ENGINES))

        wait_until(lambda: scraped(3), 90, "three scrapes of every engine")
        assert most_threads <= SCRAPE_WORKERS + 1  # the pool and its timer
        assert engines.most_at_once == 1  # no engine scraped twice at once
        latest = poller.latest()
        assert len(latest) == ENGINES
        # This test's one-process server is slow under load: a scrape may time out.
        assert sum(1 for s in latest.values() if s.up) >= ENGINES / 2
        # Reload: one engine changes its URL, one leaves, the rest keep their snapshots.
        changed = ScrapeTarget("e0", f"{engines.url}/moved", 2.0)
        poller.update([changed, *targets[2:]], EngineCollectorConfig(timeout=2.0))
        after = poller.latest()
        assert "e1" not in after and len(after) == ENGINES - 1  # the others all kept theirs
        wait_until(lambda: engines.count("/moved") >= 1, 30, "the changed engine's new URL")
        before = engines.count("/e1")
        time.sleep(4.5)
        assert engines.count("/e1") <= before + 1  # at most the scrape already running
    finally:
        poller.stop(5)
    wait_until(lambda: scrape_threads() == 0, 10, "the pool's threads to end")


def test_stop_is_bounded_while_a_scrape_hangs(engines: Engines) -> None:
    targets = [
        ScrapeTarget("hang", f"{engines.url}/hang", 1.0),
        ScrapeTarget("ok", f"{engines.url}/ok", 1.0),
    ]
    poller = EnginePoller(targets, EngineCollectorConfig(timeout=20.0))
    poller.start()
    wait_until(lambda: engines.count("/hang") >= 1, 10, "the hanging scrape")
    wait_until(lambda: engines.count("/ok") >= 2, 10, "the other engine scraped on")
    started = time.monotonic()
    poller.stop(1.0)
    assert time.monotonic() - started < 1.0 + 2.0
    engines.release.set()
