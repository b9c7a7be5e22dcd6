"""Secrets: checked where they are loaded, and redacted (before any cut) wherever the CLI
or the daemon prints what a server sent, even a server that echoes every header back."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import yaml

from streamobs.config import ConfigError, parse_config
from streamobs.daemon import Daemon
from streamobs.files import FileRefused, read_limited
from streamobs.secret import (
    MAX_SECRET_CHARS,
    Secret,
    SecretError,
    check_secret,
    load_api_key,
    redact,
)
from tests.echo_server import EchoServer
from tests.fixtures import run_cli, wait_for
from tests.otlp_receiver import receiver

# Distinctive first characters: a leaked prefix is found, never a coincidence.
KEY = "Zq9Xv7kApiKey-0123456789abcdef"
HEADER = "Wm4Yt2hAzureHdr-abcdef0123456789"
TOKEN = "Jx8Pc3nCustomTok-9876543210"
USER = "Kd5Basic-user"
PASSWORD = "Rv6Hs1mBasicPw-abcdef0123"
BASIC_TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (KEY, HEADER, TOKEN, PASSWORD, BASIC_TOKEN)
SLASHED = KEY[:5] + "/b64+key=="  # percent-encoding changes it
QUOTED = KEY[:5] + 'with"quote\\'  # JSON escaping changes it


def assert_no_leak(text: str) -> None:
    for secret in SECRETS:
        assert secret[:5] not in text, f"a prefix of a secret leaked: {text[:2000]}"


# -- checked where loaded ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Zq9Xv\nsecond-line", "line break"),
        ("Zq9Xv\rx", "line break"),
        ("Zq9Xv\x1bx", "control characters"),
        ("Zq9Xv-ключ", "non-ASCII"),
        ("Zq9Xv-clé", "non-ASCII"),
        ("Zq9Xv" + "a" * MAX_SECRET_CHARS, "longer than"),
        ("   ", "empty"),
    ],
)
def test_bad_keys_from_the_environment_are_refused_naming_the_variable(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEY_VAR", value)
    with pytest.raises(SecretError) as caught:
        load_api_key("TEST_KEY_VAR", None)
    message = str(caught.value)
    assert "TEST_KEY_VAR" in message and reason in message and "Zq9Xv" not in message


def test_a_good_key_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY_VAR", f"  {KEY}\n")
    key = load_api_key("TEST_KEY_VAR", None)
    assert key is not None and key.reveal() == KEY
    assert check_secret("a\tb", "x") == "a\tb"


def test_key_files_must_be_small_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_text("Zq9Xv" * 10_000)
    two = tmp_path / "two"
    two.write_text("Zq9Xv-one\nZq9Xv-two\n")
    latin = tmp_path / "latin"
    latin.write_bytes(b"Zq9Xv\xe9")
    nul = tmp_path / "nul"
    nul.write_bytes(b"Zq9Xv\0rest")
    cases = {
        "/dev/zero": "is a device",
        str(fifo): "is a FIFO",  # open() on a FIFO would wait for a writer forever
        str(tmp_path): "is a directory",
        str(big): "larger than",
        str(two): "line break",
        str(latin): "not UTF-8",
        str(nul): "NUL",
        str(tmp_path / "missing"): "No such file",
    }
    for path, reason in cases.items():
        with pytest.raises(SecretError) as caught:
            load_api_key(None, path)
        message = str(caught.value)
        assert path in message and reason in message and "Zq9Xv" not in message, message


def test_read_limited_never_reads_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_limited(path, 100, "file") == b"x" * 100
    with pytest.raises(FileRefused, match="larger than"):
        read_limited(path, 99, "file")


def test_cli_refuses_a_key_with_a_newline_in_one_line_without_the_key() -> None:
    for value in (f"{KEY}\ninjected: header", f"{KEY}-ключ"):
        proc = run_cli(
            "probe", "http://127.0.0.1:1", "--model", "m", "--api-key-env", "K", env={"K": value}
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "K" in proc.stderr
        assert_no_leak(proc.stdout + proc.stderr)


def test_daemon_refuses_a_bad_key_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text(
        yaml.safe_dump({"targets": [{"name": "a", "url": "http://h", "api_key_env": "K"}]})
    )
    proc = run_cli("run", "--config", str(config), env={"K": f"{KEY}\nx"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "targets[0].api_key_env: API key environment variable K holds a line break" in proc.stderr
    )
    assert_no_leak(proc.stderr)


def test_secret_headers_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HDR", HEADER)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    target = {
        "name": "a",
        "url": "http://h",
        "headers": {"api-key": {"env": "HDR"}, "X-Thing": {"file": str(token)}, "X-T": "ops"},
    }
    loaded = parse_config({"targets": [target]}).targets[0]
    assert dict(loaded.headers) == {"api-key": HEADER, "X-Thing": TOKEN, "X-T": "ops"}
    assert set(loaded.secrets()) == {HEADER, TOKEN}
    assert_no_leak(repr(loaded))
    inline = {"name": "a", "url": "http://h", "headers": {"X-Api-Key": HEADER}}
    assert parse_config({"targets": [inline]}).targets[0].secrets() == (HEADER,)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"file": "/dev/zero"}, "is a device"),
        ({"env": "STREAMOBS_TEST_UNSET"}, "is not set"),
        ({"env": "A", "file": "/x"}, "not both"),
        ({"colour": "red"}, "unknown key"),
        (f"{HEADER}-ключ", "characters an HTTP header cannot carry"),
        (f"{HEADER}\0", "no CR, LF or NUL"),
        (5, "expected a string"),
    ],
)
def test_bad_header_values_name_the_header_never_the_value(value: object, reason: str) -> None:
    target = {"name": "a", "url": "http://h", "headers": {"api-key": value}}
    with pytest.raises(ConfigError) as caught:
        parse_config({"targets": [target]})
    message = str(caught.value)
    assert "targets[0].headers.api-key" in message and reason in message
    assert_no_leak(message)


# -- the redaction helper ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"upstream said: Authorization: Bearer {KEY}",
        f'{{"headers": {{"Authorization": "Bearer {KEY}", "api-key": "{HEADER}"}}}}',
        f"{{'x-api-key': '{HEADER}', 'Cookie': 'session={TOKEN}; other=1'}}",
        f'{{\\"authorization\\": \\"Bearer {KEY}\\"}}',
        f"GET /v1?api-key={HEADER}&x=1",
        f"Proxy-Authorization: Basic {TOKEN}",
        f"Cookie: a=1; s={TOKEN}",
        f"the key {KEY} is not valid",
        "the key " + json.dumps(KEY + '"') + " is quoted",
        f"percent-encoded {quote(SLASHED, safe='')}",
        "json-escaped " + json.dumps(QUOTED),
    ],
)
def test_redact_masks_secrets_and_credential_headers(text: str) -> None:
    assert_no_leak(redact(text, [Secret(KEY), HEADER, TOKEN, SLASHED, QUOTED]))


def test_redact_masks_headers_it_was_not_told_about() -> None:
    for text in (f"api-key: {HEADER}", f"Bearer {TOKEN}", f'"cookie": "{TOKEN}"'):
        assert_no_leak(redact(text))


def test_redact_masks_before_cutting_and_masks_a_tail_cut_by_someone_else() -> None:
    for cut in range(1, len(KEY) + 20):
        text = "x" * (500 - cut) + KEY + " and more"
        out = redact(text, [KEY], max_length=500)
        assert len(out) <= 500
        assert_no_leak(out)
        assert_no_leak(redact(text[:500], [KEY]))  # already cut: a tail of 5+ chars is masked
    assert redact("plain text", [KEY], max_length=5) == "plai…"
    assert redact("ops and stops", ["ops-not-here"]) == "ops and stops"


# -- a server that echoes every request header back --------------------------------------


def test_cli_probe_against_an_echoing_server_prints_no_secret() -> None:
    with EchoServer(mode="echo") as echo:
        for extra in ([], ["--json"], ["--count", "2"]):
            proc = run_cli(
                "probe", echo.url, "--model", "m", "--api-key-env", "K",
                "--header", f"api-key: {HEADER}", "--header", f"X-Custom-Token: {TOKEN}",
                *extra, env={"K": KEY},
            )  # fmt: skip
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert "http_status" in proc.stdout
            assert_no_leak(proc.stdout + proc.stderr)
        # Discovery (no --model) fails on the echoed 401: its message is redacted too.
        proc = run_cli("probe", echo.url, "--api-key-env", "K", env={"K": KEY})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert_no_leak(proc.stdout + proc.stderr)
        # The server really saw them: the checks above are not vacuous.
        assert any(h.get("authorization") == f"Bearer {KEY}" for h in echo.headers_seen())
        assert any(h.get("api-key") == HEADER for h in echo.headers_seen())


def test_daemon_against_an_echoing_server_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("K", KEY)
    monkeypatch.setenv("HDR", HEADER)
    with EchoServer(mode="echo") as echo:
        config = {
            "web": {"listen_address": "127.0.0.1:0"},
            "shutdown_grace": "1s",
            "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
            "target_defaults": {
                "api_key_env": "K",
                "headers": {"api-key": {"env": "HDR"}, "X-Custom-Token": TOKEN},
            },
            "targets": [
                {"name": "fixed", "url": echo.url, "model": "m", "interval": "100ms"},
                {"name": "found", "url": echo.url, "interval": "100ms"},  # discovery echoes
            ],
            "modules": {"default": {"credential_hosts": ["127.0.0.1"]}},
        }
        d = Daemon(parse_config(config))
        d.start()
        try:
            base = f"http://127.0.0.1:{d.web.port}"
            wait_for(lambda: "Last failure" in requests.get(base + "/", timeout=5).text)
            page = requests.get(base + "/", timeout=5).text
            assert "http_status" in page
            debug = requests.get(
                base + "/probe", params={"target": echo.url, "debug": "1"}, timeout=30
            ).text
            assert "Credentials: sent" in debug and "Error:" in debug
            metrics = requests.get(base + "/metrics", timeout=5).text
        finally:
            d.stop()
        seen = echo.headers_seen()
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in seen)
    assert any(h.get("x-custom-token") == TOKEN for h in seen)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "http_status" in logs
    for text in (page, debug, metrics, logs):
        assert_no_leak(text)


def test_daemon_log_in_a_subprocess_shows_no_secret(tmp_path: Path) -> None:
    with EchoServer(mode="echo") as echo:
        path = tmp_path / "c.yml"
        path.write_text(
            yaml.safe_dump(
                {
                    "web": {"listen_address": "127.0.0.1:0"},
                    "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
                    "targets": [
                        {
                            "name": "t",
                            "url": echo.url,
                            "interval": "100ms",
                            "api_key_env": "K",
                            "headers": {"api-key": HEADER},
                        }
                    ],
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamobs", "run", "--config", str(path), "--log-level",
             "debug"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "K": KEY},
        )  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))  # type: ignore[union-attr]
        reader.start()
        try:
            wait_for(lambda: len(echo.headers_seen()) >= 4)
        finally:
            proc.terminate()
            proc.wait(15)
            reader.join(15)
    err = "".join(lines)
    assert "Traceback" not in err and "t:" in err
    assert_no_leak(err)


def test_cli_probe_with_basic_auth_against_an_echoing_server_prints_no_secret(
    tmp_path: Path,
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    with EchoServer(mode="echo") as echo:
        for extra in (["--model", "m"], ["--model", "m", "--json"], []):  # []: discovery
            proc = run_cli(
                "probe", echo.url, "--basic-auth-user", USER,
                "--basic-auth-password-file", str(password), *extra,
            )  # fmt: skip
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert_no_leak(proc.stdout + proc.stderr)
        seen = echo.headers_seen()
    assert seen and all(h.get("authorization") == f"Basic {BASIC_TOKEN}" for h in seen)


def test_daemon_with_basic_auth_against_an_echoing_server_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Everywhere the daemon shows server text: the status page, /probe's debug output,
    # /metrics, its log and the OTLP spans (whose status carries the probe's error).
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PW", PASSWORD)
    with EchoServer(mode="echo") as echo, receiver("http/protobuf") as (endpoint, received):
        basic = {"username": USER, "password_env": "PW"}
        config = {
            "web": {"listen_address": "127.0.0.1:0"},
            "shutdown_grace": "1s",
            "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
            "target_defaults": {"basic_auth": basic},
            "targets": [
                {"name": "fixed", "url": echo.url, "model": "m", "interval": "100ms"},
                {"name": "found", "url": echo.url, "interval": "100ms"},  # discovery echoes
            ],
            "modules": {"default": {"credential_hosts": ["127.0.0.1"]}},
            "otlp": {"enabled": True, "protocol": "http/protobuf", "endpoint": endpoint,
                     "export_interval": "300ms", "traces": True},
        }  # fmt: skip
        d = Daemon(parse_config(config))
        d.start()
        try:
            base = f"http://127.0.0.1:{d.web.port}"
            wait_for(lambda: "Last failure" in requests.get(base + "/", timeout=5).text)
            page = requests.get(base + "/", timeout=5).text
            debug = requests.get(
                base + "/probe", params={"target": echo.url, "debug": "1"}, timeout=30
            ).text
            assert "Credentials: sent" in debug and "Error:" in debug
            metrics = requests.get(base + "/metrics", timeout=5).text
            assert received.wait_for(lambda: bool(received.traces), timeout=20)
        finally:
            d.stop()
        spans = "\n".join(str(request) for request in received.traces)
        seen = echo.headers_seen()
    assert "http_status" in page and "HTTP 4" in spans  # the error text did reach both
    assert any(h.get("authorization") == f"Basic {BASIC_TOKEN}" for h in seen)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (page, debug, metrics, logs, spans):
        assert_no_leak(text)


@pytest.mark.parametrize("credential", ["api_key", "basic_auth"])
def test_doctor_against_an_echoing_server_prints_no_secret(credential: str) -> None:
    # Its checks quote the server's error replies (headers, errors): masked there too.
    flags = (
        ["--api-key-env", "K"]
        if credential == "api_key"
        else ["--basic-auth-user", USER, "--basic-auth-password-env", "PW"]
    )
    with EchoServer(mode="echo") as echo:
        for extra in ([], ["--json"]):
            proc = run_cli(
                "doctor", echo.url, "--model", "m", "--timeout", "5", "--skip", "long-stream",
                *flags, *extra, env={"K": KEY, "PW": PASSWORD},
            )  # fmt: skip
            assert proc.returncode == 1 and "Traceback" not in proc.stderr
            assert "rejected request with headers" in proc.stdout  # the echo is shown ...
            assert_no_leak(proc.stdout + proc.stderr)  # ... masked
        seen = echo.headers_seen()
    expected = f"Bearer {KEY}" if credential == "api_key" else f"Basic {BASIC_TOKEN}"
    assert any(h.get("authorization") == expected for h in seen)  # (not /metrics: none)
