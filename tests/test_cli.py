"""The command line: exit codes, one-line errors, and the API key never leaking."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from streamobs.cli import build_parser, main
from streamobs.probe import ProbeSpec, parse_target
from streamobs.probe.models import ModelDiscoveryError, discover_model
from streamobs.secret import Secret
from tests.fixtures import FIXTURES, run_cli
from tests.scripted_server import ScriptedServer, send, stream_fixture, token_stream

KEY = "sk-test-7f3a9c1e5b2d4068"


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_single_probe_human_output_and_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedServer(stream_fixture("chat-stream-usage.sse", delay=0.005)) as server:
        code = main(["probe", server.url, "--model", "tiny"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("TTFT", "TPOT", "ITL", "e2e", "outcome=ok", "16 (from usage)", "buffered"):
        assert word in out


def test_json_output_for_a_batch(capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedServer(token_stream(5, 0.005)) as server:
        code = main(
            ["probe", server.url, "--model", "m", "--count", "4", "--concurrency", "2", "--json"]
        )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["summary"]["probes"] == 4 and doc["summary"]["ok"] == 4
    probe = doc["probes"][0]
    assert probe["outcome"] == "ok" and probe["output_tokens"] == 5
    assert probe["seconds"]["ttft"] > 0 and len(probe["itl_seconds"]) == 4
    assert probe["delivery"]["buffered"] is False


def test_failed_probe_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedServer(stream_fixture("chat-stream-engine-dead.sse")) as server:
        code = main(["probe", server.url, "--model", "tiny"])
    assert code == 1
    assert "outcome=stream_error" in capsys.readouterr().out


def test_model_discovered_from_v1_models(capsys: pytest.CaptureFixture[str]) -> None:
    models = (FIXTURES / "models.json").read_bytes()
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    stream = stream_fixture("chat-stream-usage.sse")

    def script(conn):  # type: ignore[no-untyped-def]
        if server.requests[-1].startswith(b"GET /v1/models "):
            conn.sendall(reply % (len(models), models))
        else:
            stream(conn)

    with ScriptedServer(script) as server:
        code = main(["probe", server.url, "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["probes"][0]["model"] == "tiny"
    assert b'"model": "tiny"' in server.requests[-1]


@pytest.mark.parametrize(
    "args,code,fragment",
    [
        (["probe", "ftp://host/v1"], 2, "scheme must be http or https"),
        (["probe", "http://"], 2, "no host"),
        (["probe", "http://u:p@127.0.0.1:1"], 2, "credentials in the URL"),
        (["probe", "http://127.0.0.1:1", "--count", "0"], 2, "must be at least 1"),
        (["probe", "http://127.0.0.1:1", "--timeout", "-3"], 2, "positive number"),
        (["probe", "http://127.0.0.1:1", "--bogus"], 2, "unrecognized arguments"),
        (["probe", "http://127.0.0.1:1", "--model", "m", "--header", "nocolon"], 2, "--header"),
        (["probe", "http://127.0.0.1:1", "--api-key-file", "/nonexistent/key"], 2, "cannot read"),
        (
            ["probe", "http://127.0.0.1:1"],
            1,
            "cannot connect to http://127.0.0.1:1/v1/models: connection refused",
        ),
        (["probe", "http://127.0.0.1:1", "--max-token", "5"], 2, "unrecognized arguments"),
        (
            ["probe", "http://127.0.0.1:1/v1/chat/completion"],
            2,
            "http://127.0.0.1:1/v1/chat/completion is not an API path",
        ),
        (["probe", "http://127.0.0.1:1/v1/models", "--model", "m"], 2, "is not an API path"),
        (["nosuchcommand"], 2, "invalid choice"),
    ],
)
def test_bad_input_gets_one_clear_line(args: list[str], code: int, fragment: str) -> None:
    line = assert_one_line_error(run_cli(*args), code)
    assert fragment in line


def test_discovery_names_a_dns_failure() -> None:
    def no_such_host(host: str, port: int) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    target = parse_target("http://llm.invalid:8000")
    with pytest.raises(ModelDiscoveryError) as failure:
        discover_model(target, timeout=5, resolver=no_such_host)
    assert str(failure.value) == (
        "DNS lookup for http://llm.invalid:8000/v1/models failed: cannot resolve "
        "llm.invalid: Name or service not known"
    )


def test_discovery_names_the_tls_reason() -> None:
    # An https URL for a plain-HTTP server that speaks first: the TLS library's reason,
    # said once.
    reply = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    with ScriptedServer(send(reply), read_request=False) as server:
        url = server.url.replace("http://", "https://")
        line = assert_one_line_error(run_cli("probe", url, "--connect-timeout", "5"), 1)
    assert line.startswith(f"streamobs probe: error: TLS handshake with {url}/v1/models failed: ")
    assert "WRONG_VERSION_NUMBER" in line or "RECORD_LAYER_FAILURE" in line, line
    assert line.count("TLS") == 1


def test_a_path_that_is_not_an_api_path_is_refused_before_any_request() -> None:
    with ScriptedServer(send(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")) as server:
        line = assert_one_line_error(run_cli("probe", server.url + "/v1/chat/completion"), 2)
        assert server.requests == []
    assert "is not an API path" in line and "/v1/chat/completions" in line


@pytest.mark.parametrize("command", ["probe", "run", "doctor", "demo", "pack", "check-config"])
def test_help_shows_each_flags_default_and_environment_variable(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    sub = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ).choices[command]
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        env = "STREAMOBS_" + action.dest.upper()
        assert f"env {env}" in text, f"{command} {action.option_strings[0]}: no {env}"
        help_text = " ".join((action.help or "").split())
        if action.default not in (None, False, True, []) and not isinstance(
            action, argparse._StoreFalseAction
        ):
            shown = f"default: {action.default}" in text or "default" in help_text.lower()
            assert shown, f"{command} {action.option_strings[0]}: default not shown"
    if command == "probe":
        assert "(default: 64; env STREAMOBS_MAX_TOKENS)" in text


def test_every_command_refuses_abbreviated_flags() -> None:
    for args in (["demo", "--slow", "3"], ["run", "--conf", "x.yml"], ["pack", "--ou", "x"]):
        line = assert_one_line_error(run_cli(*args), 2)
        assert "unrecognized arguments" in line, args


def test_pack_command_writes_the_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pack"
    assert main(["pack", "--out", str(out)]) == 0
    written = capsys.readouterr().out
    assert f"wrote {out / 'alerts' / 'streamobs.rules.yml'}" in written
    assert main(["pack", "--out", str(out), "--check"]) == 0
    assert (out / "alerts" / "alertmanager.example.yml").is_file()
    assert (out / "deploy" / "kubernetes" / "prometheusrule.yaml").is_file()
    assert len(list((out / "dashboards").glob("*.json"))) == 4


def test_unreachable_host_with_model_is_a_failed_probe() -> None:
    proc = run_cli("probe", "http://127.0.0.1:1", "--model", "m")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "outcome=connect" in proc.stdout


def test_non_openai_server_gets_one_clear_line() -> None:
    page = b"<html>hello</html>"
    reply = b"HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s"
    with ScriptedServer(send(reply % (len(page), page))) as server:
        proc = run_cli("probe", server.url)
    line = assert_one_line_error(proc, 1)
    assert "did not answer like an OpenAI-compatible server" in line


def test_environment_variables_map_to_flags() -> None:
    with ScriptedServer(token_stream(3, 0.001)) as server:
        proc = run_cli(
            "probe",
            server.url,
            "--json",
            env={"STREAMOBS_MODEL": "env-model", "STREAMOBS_MAX_TOKENS": "7"},
        )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(server.requests[0].split(b"\r\n\r\n", 1)[1])
    assert body["model"] == "env-model" and body["max_tokens"] == 7
    bad = run_cli("probe", "http://127.0.0.1:1", env={"STREAMOBS_MAX_TOKENS": "lots"})
    assert "STREAMOBS_MAX_TOKENS" in assert_one_line_error(bad, 2)


def test_api_key_never_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    body = json.dumps({"error": {"message": f"invalid api key {KEY}"}}).encode()
    reply = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
    reply += b"content-length: %d\r\n\r\n%s" % (len(body), body)
    with ScriptedServer(send(reply)) as server:
        proc = run_cli(
            "probe",
            server.url,
            "--model",
            "m",
            "--json",
            "--api-key-file",
            str(key_file),
            "--log-level",
            "debug",
        )
        # Sent to the server, as it must be ...
        assert f"Authorization: Bearer {KEY}".encode() in server.requests[0]
    # ... and nowhere else.
    assert proc.returncode == 1
    assert KEY not in proc.stdout and KEY not in proc.stderr
    doc = json.loads(proc.stdout)
    assert "***" in doc["probes"][0]["error"]

    monkeypatch.setenv("SO_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with ScriptedServer(send(reply)) as server:
        code = main(["probe", server.url, "--model", "m", "--api-key-env", "SO_TEST_KEY"])
    assert code == 1
    assert caplog.text and KEY not in caplog.text
    spec = ProbeSpec(
        target=parse_target("http://127.0.0.1:1"),
        model="m",
        api_key=Secret(KEY),
        headers={"X-Api-Key": KEY},
    )
    assert KEY not in repr(spec) and KEY not in str(spec)
    assert KEY not in repr(Secret(KEY)) and KEY not in f"{Secret(KEY)}"
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))


@pytest.mark.parametrize(
    "flags,fragment",
    [
        (
            ["--timeout", "1", "--first-token-timeout", "5"],
            "--first-token-timeout: longer than --timeout",
        ),
        (["--max-tokens", "2000000"], "--max-tokens: expected an integer from 1 to 1000000"),
        (["--header", "Authorization: x"], "--header Authorization: use --api-key-file or"),
        (["--api-key-env", "STREAMOBS_TEST_UNSET_VAR"], "--api-key-env: API key environment"),
        (["--endpoint", "messages"], "URL: the URL names the completions endpoint but --endpoint"),
    ],
)
def test_probe_flags_go_through_the_config_target_parser(flags: list[str], fragment: str) -> None:
    # The same checks as a config file's targets, named by the flag they came from.
    url = "http://127.0.0.1:1/v1/completions"
    line = assert_one_line_error(run_cli("probe", url, "--model", "m", *flags), 2)
    assert fragment in line
