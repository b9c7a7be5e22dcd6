"""HTTP basic auth for targets, modules and target_defaults: the config grammar and its
errors, servers that require it (a loopback one, and nginx ``auth_basic`` in front of an
upstream), probed by the daemon, ``streamobs probe`` and ``streamobs doctor``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from streamobs.config import ConfigError, parse_config
from streamobs.daemon import Daemon
from streamobs.probe.spec import ProbeSpec, TargetError, parse_target
from streamobs.secret import BasicAuth, Secret, SecretError, redact
from tests.echo_server import EchoServer
from tests.fixtures import run_cli, wait_for
from tests.nginx import STREAMING_SEED, Nginx

USER = "probe-user"
PASSWORD = "Pw7Qz-basic-0123456789secret"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BASIC = f"Basic {TOKEN}"
KEY = "sk-bearer-key-0123456789"


def assert_no_leak(text: str) -> None:
    for secret in (PASSWORD, TOKEN):
        assert secret[:6] not in text, f"a prefix of a secret leaked: {text[:2000]}"


def one_target(**settings: Any) -> dict[str, Any]:
    return {"targets": [{"name": "a", "url": "http://h", **settings}]}


@pytest.fixture
def password_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_BASIC_PASSWORD", PASSWORD)
    return "TEST_BASIC_PASSWORD"


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return str(path)


# -- the config ---------------------------------------------------------------------------


def test_basic_auth_from_a_variable_or_a_file(password_env: str, password_file: str) -> None:
    for source in ({"password_env": password_env}, {"password_file": password_file}):
        target = parse_config(one_target(basic_auth={"username": USER, **source})).targets[0]
        assert target.api_key is None and target.basic_auth is not None
        assert target.basic_auth.username == USER
        assert target.basic_auth.password.reveal() == PASSWORD  # the file's newline is gone
        assert {s.reveal() if isinstance(s, Secret) else s for s in target.secrets()} == {
            PASSWORD,
            TOKEN,
        }
        spec = target.probe_spec("m")
        assert spec.request_headers()["Authorization"] == BASIC
        for shown in (repr(target), str(target), repr(spec), repr(target.basic_auth)):
            assert_no_leak(shown)
        assert USER in repr(target.basic_auth)  # the user name is no secret


def test_messages_probes_send_basic_auth_alone(password_env: str) -> None:
    settings = {
        "endpoint": "messages",
        "basic_auth": {"username": USER, "password_env": password_env},
    }
    headers = parse_config(one_target(**settings)).targets[0].probe_spec("m").request_headers()
    assert headers["Authorization"] == BASIC and "x-api-key" not in headers


@pytest.mark.parametrize(
    ("basic_auth", "extra", "message"),
    [
        ("probe:pw", {}, "targets[0].basic_auth: expected {username: NAME, password_file: PATH}"),
        (
            {"username": USER},
            {},
            "targets[0].basic_auth: no password (set targets[0].basic_auth.password_file or "
            "targets[0].basic_auth.password_env)",
        ),
        ({"password_env": "PW"}, {}, "targets[0].basic_auth.username: required"),
        ({"username": 5, "password_env": "PW"}, {}, "username: expected a string, got int"),
        ({"username": "a:b", "password_env": "PW"}, {}, "username: basic-auth user name holds ':'"),
        ({"username": "a\nb", "password_env": "PW"}, {}, "username: basic-auth user name holds c"),
        ({"username": "ключ", "password_env": "PW"}, {}, "username: basic-auth user name holds n"),
        ({"username": " a", "password_env": "PW"}, {}, "starts or ends with whitespace"),
        ({"username": "", "password_env": "PW"}, {}, "basic_auth.username: basic-auth user na"),
        (
            {"username": USER, "password_env": "PW", "password_file": "/x"},
            {},
            "targets[0].basic_auth.password_env: not together with "
            "targets[0].basic_auth.password_file (one password)",
        ),
        ({"username": USER, "password": "x"}, {}, "targets[0].basic_auth.password: unknown key"),
        (
            {"username": USER, "password_env": "STREAMOBS_TEST_UNSET_PW"},
            {},
            "targets[0].basic_auth.password_env: basic-auth password environment variable "
            "STREAMOBS_TEST_UNSET_PW is not set",
        ),
        (
            {"username": USER, "password_file": "/dev/zero"},
            {},
            "targets[0].basic_auth.password_file: basic-auth password file /dev/zero is a device",
        ),
        (
            {"username": USER, "password_env": "PW"},
            {"api_key_env": "PW"},
            "targets[0].basic_auth: not together with targets[0].api_key_env "
            "(one Authorization header: an API key or basic auth)",
        ),
    ],
)
def test_bad_basic_auth_names_the_key(
    basic_auth: object, extra: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", PASSWORD)
    with pytest.raises(ConfigError) as caught:
        parse_config(one_target(basic_auth=basic_auth, **extra))
    assert message in str(caught.value)
    assert_no_leak(str(caught.value))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (PASSWORD + "\ninjected: header", "holds a line break"),
        (PASSWORD + "\0", "holds a NUL character"),
        (PASSWORD + "-ключ", "holds non-ASCII characters"),
        (PASSWORD + "\x1b", "holds control characters"),
        (PASSWORD * 1000, "is (longer|larger) than"),  # a file is refused by its size
        ("  ", "is empty"),
    ],
)
def test_bad_passwords_are_refused_naming_the_source_never_the_value(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "pw"
    path.write_text(value)
    sources = [({"password_file": str(path)}, str(path))]
    if "\0" not in value:  # an environment cannot hold one
        monkeypatch.setenv("PW", value)
        sources.append(({"password_env": "PW"}, "PW"))
    for source, where in sources:
        with pytest.raises(ConfigError) as caught:
            parse_config(one_target(basic_auth={"username": USER, **source}))
        message = str(caught.value)
        assert message.startswith(f"targets[0].basic_auth.{next(iter(source))}: basic-auth")
        assert where in message and re.search(reason, message), message
        assert_no_leak(message)


def test_modules_and_target_defaults_take_basic_auth(password_env: str) -> None:
    basic = {"username": USER, "password_env": password_env}
    config = parse_config(
        {
            "target_defaults": {"basic_auth": basic},
            "targets": [{"name": "a", "url": "http://h"}],
            "modules": {"other": {"basic_auth": {**basic, "username": "other-user"}}},
        }
    )
    assert config.targets[0].basic_auth == BasicAuth(USER, Secret(PASSWORD))
    module = config.module_target("other", "http://gw")
    assert module.basic_auth is not None and module.basic_auth.username == "other-user"
    assert config.module_target("default", "http://gw").basic_auth == config.targets[0].basic_auth
    with pytest.raises(ConfigError, match=r"modules\.m\.basic_auth\.username: required"):
        parse_config({**one_target(), "modules": {"m": {"basic_auth": {"password_env": "PW"}}}})


def test_a_credential_of_its_own_replaces_the_defaults_one(
    password_env: str, password_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One Authorization header: a target (or module) that sets an API key or basic auth
    # replaces whatever of them target_defaults set, as a whole (never merged key by key).
    monkeypatch.setenv("TEST_KEY", KEY)
    basic = {"username": USER, "password_env": password_env}
    targets = [
        {"name": "basic", "url": "http://h", "basic_auth": basic},
        {"name": "inherits", "url": "http://h"},
        {"name": "own-file", "url": "http://h", "basic_auth": {"username": USER,
                                                               "password_file": password_file}},
        {"name": "none", "url": "http://h", "api_key_env": None},
    ]  # fmt: skip
    config = parse_config(
        {
            "target_defaults": {"api_key_env": "TEST_KEY"},
            "targets": targets,
            "modules": {"gw": {"basic_auth": basic}},
        }
    )
    by_name = {t.name: t for t in config.targets}
    assert by_name["basic"].api_key is None and by_name["basic"].basic_auth is not None
    assert by_name["inherits"].api_key == Secret(KEY) and by_name["inherits"].basic_auth is None
    assert by_name["own-file"].basic_auth is not None and by_name["own-file"].api_key is None
    assert by_name["none"].credential is None
    gateway = config.module_target("gw", "http://gw")
    assert gateway.api_key is None and gateway.basic_auth is not None
    # The other way round, and a target's basic_auth replacing the defaults' whole.
    swapped = parse_config(
        {
            "target_defaults": {"basic_auth": basic},
            "targets": [
                {"name": "key", "url": "http://h", "api_key_env": "TEST_KEY"},
                {"name": "file", "url": "http://h",
                 "basic_auth": {"username": "u2", "password_file": password_file}},
            ],
        }
    )  # fmt: skip
    key, file = swapped.targets
    assert key.basic_auth is None and key.api_key == Secret(KEY)
    assert file.basic_auth == BasicAuth("u2", Secret(PASSWORD))


def test_the_basic_auth_record() -> None:
    auth = BasicAuth(USER, Secret(PASSWORD))
    assert auth.authorization() == BASIC
    assert auth.token.reveal() == TOKEN
    assert_no_leak(repr(auth) + str(auth) + f"{auth}")
    with pytest.raises(TypeError):
        pickle.dumps(auth)
    for bad in ("a:b", "", "a\rb", "é"):
        with pytest.raises(SecretError) as caught:
            BasicAuth(bad, Secret(PASSWORD))
        assert "basic-auth user name" in str(caught.value)
    with pytest.raises(SecretError, match="basic-auth password holds a line break"):
        BasicAuth(USER, Secret("a\nb"))
    with pytest.raises(TargetError, match="one Authorization header"):
        ProbeSpec(parse_target("http://h"), "m", api_key=Secret(KEY), basic_auth=auth)


def test_redact_masks_the_token_and_the_password() -> None:
    texts = [
        f"upstream said: Authorization: {BASIC}",
        f'{{"authorization": "{BASIC}"}}',
        f"decoded: user {USER} password {PASSWORD}",
        f"{TOKEN} in a query",
    ]
    for text in texts:
        assert_no_leak(redact(text, BasicAuth(USER, Secret(PASSWORD)).secrets()))
    # A challenge or prose is not a credential.
    assert redact('WWW-Authenticate: Basic realm="llm"') == 'WWW-Authenticate: Basic realm="llm"'
    assert redact("check the basic auth.") == "check the basic auth."


# -- a server that requires basic auth ----------------------------------------------------


def _daemon_config(url: str, password_env: str) -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "1s",
        "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
        "targets": [
            # No model: /v1/models is asked with the credentials too.
            {"name": "with", "url": url, "interval": "200ms",
             "basic_auth": {"username": USER, "password_env": password_env}},
            {"name": "without", "url": url, "model": "m", "interval": "200ms"},
        ],
    }  # fmt: skip


def _daemon_sees_ok_with_and_401_without(url: str, password_env: str) -> str:
    d = Daemon(parse_config(_daemon_config(url, password_env)))
    d.start()
    try:
        metrics_url = f"http://127.0.0.1:{d.web.port}/metrics"

        def settled() -> bool:
            text = requests.get(metrics_url, timeout=5).text
            return (
                'streamobs_probe_success{model="m",target="with"} 1.0' in text
                and 'outcome="http_status",target="without"}' in text
            )

        wait_for(settled, timeout=60)
        status = requests.get(f"http://127.0.0.1:{d.web.port}/", timeout=5).text
        return requests.get(metrics_url, timeout=5).text + status
    finally:
        d.stop()


def _cli_probe(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli("probe", url, "--json", "--timeout", "30", *flags, env={"PW": PASSWORD})


def test_the_daemon_probes_a_server_that_requires_basic_auth(password_env: str) -> None:
    with EchoServer(basic_auth=(USER, PASSWORD)) as server:
        shown = _daemon_sees_ok_with_and_401_without(server.url, password_env)
        seen = server.headers_seen()
    assert any(h.get("authorization") == BASIC for h in seen)
    assert any("authorization" not in h for h in seen)  # the other target sends none
    assert_no_leak(shown)


@pytest.mark.parametrize("source", ["env", "file"])
def test_streamobs_probe_sends_basic_auth(source: str, password_file: str) -> None:
    password = (
        ["--basic-auth-password-env", "PW"]
        if source == "env"
        else ["--basic-auth-password-file", password_file]
    )
    with EchoServer(basic_auth=(USER, PASSWORD)) as server:
        refused = _cli_probe(server.url, "--model", "m")
        found = _cli_probe(server.url, "--basic-auth-user", USER, *password)  # discovery too
        seen = server.headers_seen()
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["probes"][0]["http_status"] == 401
    assert found.returncode == 0, found.stdout + found.stderr
    assert json.loads(found.stdout)["probes"][0]["outcome"] == "ok"
    assert [h.get("authorization") for h in seen[1:]] == [BASIC, BASIC]  # models, then chat
    assert_no_leak(refused.stdout + refused.stderr + found.stdout + found.stderr)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--basic-auth-user", USER], "--basic-auth-user: no password (set "
         "--basic-auth-password-file or --basic-auth-password-env)"),
        (["--basic-auth-password-env", "PW"], "--basic-auth-user: required"),
        (["--basic-auth-user", "a:b", "--basic-auth-password-env", "PW"], "holds ':'"),
        (["--basic-auth-user", USER, "--basic-auth-password-env", "PW", "--api-key-env", "PW"],
         "--basic-auth-user: not together with --api-key-env (one Authorization header"),
        (["--basic-auth-user", USER, "--basic-auth-password-env", "PW",
          "--basic-auth-password-file", "/x"],
         "--basic-auth-password-env: not together with --basic-auth-password-file"),
        (["--basic-auth-user", USER, "--basic-auth-password-file", "/dev/zero"],
         "--basic-auth-password-file: basic-auth password file /dev/zero is a device"),
        (["--basic-auth-user", USER, "--basic-auth-password-env", "STREAMOBS_TEST_UNSET_PW"],
         "--basic-auth-password-env: basic-auth password environment variable"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["probe", "doctor"])
def test_basic_auth_flags_refuse_bad_input_in_one_line(
    command: str, flags: list[str], message: str
) -> None:
    proc = run_cli(command, "http://127.0.0.1:1", "--model", "m", *flags, env={"PW": PASSWORD})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert_no_leak(proc.stderr)


def test_streamobs_doctor_sends_basic_auth(password_file: str) -> None:
    with EchoServer(basic_auth=(USER, PASSWORD)) as server:
        proc = run_cli(
            "doctor", server.url, "--json", "--timeout", "10",
            "--skip", "long-stream", "--skip", "disconnect",
            "--basic-auth-user", USER, "--basic-auth-password-file", password_file,
        )  # fmt: skip
        seen = server.headers_seen()
    report = json.loads(proc.stdout)
    assert report["error"] is None and report["model"] == "m", proc.stdout
    # Every request got through: the streams were judged, none was refused.
    assert "HTTP 401" not in proc.stdout
    assert "Content-Type: text/event-stream" in " ".join(report["checks"][2]["details"])
    assert seen and all(h.get("authorization") == BASIC for h in seen)
    assert_no_leak(proc.stdout + proc.stderr)


# -- through nginx auth_basic -------------------------------------------------------------


def _htpasswd(path: Path) -> Path:
    """An nginx user file with a salted SHA-1 entry (RFC 2307 ``{SSHA}``)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(PASSWORD.encode() + salt).digest()
    path.write_text(f"{USER}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n")
    path.chmod(0o644)
    return path


def test_a_gateway_behind_nginx_auth_basic(tmp_path: Path, password_env: str) -> None:
    users = _htpasswd(tmp_path / "htpasswd")
    auth = f'auth_basic "llm";\nauth_basic_user_file {users};\n'
    with (
        EchoServer() as upstream,
        Nginx(upstream.url, STREAMING_SEED, server_config=auth) as nginx,
    ):
        refused = _cli_probe(nginx.url, "--model", "m")
        wrong = run_cli(
            "probe", nginx.url, "--json", "--model", "m", "--basic-auth-user", USER,
            "--basic-auth-password-env", "PW", env={"PW": "not-the-password"},
        )  # fmt: skip
        found = _cli_probe(nginx.url, "--basic-auth-user", USER, "--basic-auth-password-env", "PW")
        shown = _daemon_sees_ok_with_and_401_without(nginx.url, password_env)
    for proc in (refused, wrong):
        assert proc.returncode == 1
        assert json.loads(proc.stdout)["probes"][0]["http_status"] == 401
    assert found.returncode == 0, found.stdout + found.stderr
    assert json.loads(found.stdout)["probes"][0]["outcome"] == "ok"
    assert_no_leak(refused.stdout + found.stdout + found.stderr + shown)
