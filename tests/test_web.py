"""The daemon's web server on its own: bounded request threads, backlog, basic auth, and
cross-site refusal, with a fake set of endpoints."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import bcrypt
import pytest
import requests

from streamobs.web import basic_auth
from streamobs.web.basic_auth import BasicAuth, bcrypt_cost
from streamobs.web.origin import cross_site
from streamobs.web.server import BACKLOG, Reply, WebServer
from streamobs.web.webconfig import WebConfig
from tests.fixtures import require_binary


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class FakeEndpoints:
    """Counts how many requests run at once; /probe blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reloads = 0
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def metrics(self) -> Reply:
        return Reply(200, b"m 1\n")

    def status_page(self) -> Reply:
        return Reply(200, b"page")

    def ready(self) -> Reply:
        return Reply(200, b"ready\n")

    def reload_endpoint(self) -> Reply:
        with self._lock:
            self.reloads += 1
        return Reply(200, b"reloaded\n")

    def probe(self, query: dict[str, list[str]], scrape_timeout: float | None) -> Reply:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.release.wait(30)
        with self._lock:
            self.running -= 1
        return Reply(200, b"probed\n")


@contextmanager
def serve(
    endpoints: FakeEndpoints, web: WebConfig | None = None, **kwargs: int
) -> Iterator[WebServer]:
    server = WebServer("127.0.0.1:0", endpoints, web or WebConfig(), **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        endpoints.release.set()
        server.stop()


@pytest.fixture
def endpoints() -> FakeEndpoints:
    return FakeEndpoints()


@pytest.fixture
def server(endpoints: FakeEndpoints) -> Iterator[WebServer]:
    with serve(endpoints) as running:
        yield running


def test_request_threads_are_a_fixed_pool_and_excess_connections_are_refused(
    endpoints: FakeEndpoints,
) -> None:
    workers, pending, clients = 3, 4, 20
    with serve(endpoints, workers=workers, pending=pending) as server:
        url = f"http://127.0.0.1:{server.port}/probe?target=x"
        outcomes: list[int | str] = []

        def client() -> None:
            try:
                outcomes.append(requests.get(url, timeout=30).status_code)
            except requests.ConnectionError:
                outcomes.append("refused")

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        wait_for(lambda: endpoints.running == workers)
        # Everything beyond the pool and its queue is turned away at once, not parked.
        wait_for(lambda: len(outcomes) >= clients - workers - pending)
        web_threads = [t for t in threading.enumerate() if t.name.startswith("web-")]
        assert len(web_threads) == workers
        assert all(o in (503, "refused") for o in outcomes)
        endpoints.release.set()
        for t in threads:
            t.join(30)
        assert endpoints.most_running == workers
        assert len(outcomes) == clients
        assert workers <= outcomes.count(200) <= workers + pending
        assert requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code == 200


def test_listen_backlog_is_at_least_128(server: WebServer) -> None:
    ss = require_binary("ss")
    out = subprocess.run(
        [ss, "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State Recv-Q Send-Q ...: for a listening socket Send-Q is the backlog.
    assert int(out[2]) >= 128 and BACKLOG >= 128


# -- basic auth --------------------------------------------------------------------------


def _header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class CheckSpy:
    """Records every bcrypt check (the hash it ran against) and how many ran at once."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.hashes.append(hashed)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return self._real(password, hashed)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> CheckSpy:
    checker = CheckSpy()
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", checker)
    return checker


def _users(**passwords: str) -> dict[str, bytes]:
    return {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)) for u, p in passwords.items()}


def test_unknown_user_costs_a_bcrypt_check_of_the_same_cost(spy: CheckSpy) -> None:
    auth = BasicAuth(_users(prom="s3cret"))
    assert not auth.check(_header("nobody", "x"))
    assert not auth.check(_header("prom", "wrong"))
    assert len(spy.hashes) == 2
    unknown, known = spy.hashes
    assert unknown != known and bcrypt_cost(unknown) == bcrypt_cost(known) == 5


def test_good_credentials_are_checked_once_and_stay_cached_under_a_flood(spy: CheckSpy) -> None:
    auth = BasicAuth(_users(prom="s3cret"))
    assert auth.check(_header("prom", "s3cret"))
    assert len(spy.hashes) == 1
    for i in range(50):  # wrong passwords are checked every time and never cached
        assert not auth.check(_header("prom", f"guess{i}"))
        assert not auth.check(_header(f"user{i}", "s3cret"))
    assert auth.cached_entries() == 1
    checks = len(spy.hashes)
    assert auth.check(_header("prom", "s3cret"))
    assert len(spy.hashes) == checks  # answered from the cache
    assert not auth.check(_header("prom", "s3cret-but-longer"))


def test_cache_is_bounded(spy: CheckSpy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(basic_auth, "CACHE_SIZE", 2)
    auth = BasicAuth(_users(a="pa", b="pb", c="pc"))
    for user in "abc":
        assert auth.check(_header(user, "p" + user))
    assert auth.cached_entries() == 2
    checks = len(spy.hashes)
    assert auth.check(_header("a", "pa"))  # the oldest was evicted: checked again
    assert len(spy.hashes) == checks + 1


def test_bcrypt_checks_run_one_at_a_time(spy: CheckSpy) -> None:
    auth = BasicAuth(_users(prom="s3cret"))
    threads = [
        threading.Thread(target=auth.check, args=(_header("prom", f"wrong{i}"),)) for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(spy.hashes) == 16 and spy.most_running == 1


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
     "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(), "Basic \u00e9\u00e9"],
)  # fmt: skip
def test_malformed_headers_are_refused(header: str | None) -> None:
    assert not BasicAuth(_users(prom="s3cret")).check(header)


def test_repr_names_users_but_no_hash() -> None:
    users = _users(prom="s3cret")
    text = repr(WebConfig(auth=BasicAuth(users))) + repr(BasicAuth(users))
    assert "prom" in text and users["prom"].decode() not in text and "$2" not in text


def test_server_answers_401_then_200(endpoints: FakeEndpoints) -> None:
    web = WebConfig(auth=BasicAuth(_users(prom="s3cret")))
    with serve(endpoints, web) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, auth=("prom", "nope"), timeout=5).status_code == 401
        assert requests.get(url, auth=("ghost", "s3cret"), timeout=5).status_code == 401
        assert requests.get(url, auth=("prom", "s3cret"), timeout=5).text == "m 1\n"


# -- cross-site requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),
        ({"Sec-Fetch-Site": "same-origin"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Sec-Fetch-Site": "same-site"}, True),
        ({"Origin": "http://evil.example"}, True),
        ({"Origin": "null"}, True),
        ({"Origin": "http://127.0.0.1:9464"}, False),
        ({"Origin": "http://127.0.0.1:9465"}, True),
        ({"Origin": "https://127.0.0.1:9464"}, True),
        ({"Origin": "http://127.0.0.1:bad"}, True),
    ],
)
def test_cross_site(headers: dict[str, str], refused: bool) -> None:
    assert (cross_site({"Host": "127.0.0.1:9464", **headers}, tls=False) is not None) is refused


def test_reload_refuses_a_cross_site_form_post_and_accepts_curl(
    server: WebServer, endpoints: FakeEndpoints
) -> None:
    url = f"http://127.0.0.1:{server.port}/-/reload"
    # What a browser sends for a form on another site posting here.
    forged = requests.post(
        url,
        data={"a": "b"},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        timeout=5,
    )
    assert forged.status_code == 403 and endpoints.reloads == 0
    assert requests.post(url, headers={"Origin": "null"}, timeout=5).status_code == 403
    assert endpoints.reloads == 0
    curl = require_binary("curl")
    plain = subprocess.run([curl, "-s", "-X", "POST", url], capture_output=True, text=True)
    assert plain.stdout == "reloaded\n"
    same = requests.post(url, headers={"Origin": f"http://127.0.0.1:{server.port}"}, timeout=5)
    assert same.status_code == 200
    assert endpoints.reloads == 2


def test_probe_refuses_cross_site_requests(server: WebServer, endpoints: FakeEndpoints) -> None:
    url = f"http://127.0.0.1:{server.port}/probe?target=http://x"
    response = requests.get(url, headers={"Sec-Fetch-Site": "cross-site"}, timeout=5)
    assert response.status_code == 403 and endpoints.most_running == 0
