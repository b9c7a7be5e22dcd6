"""streamobs doctor through a real nginx in front of the simulator: the reference config
passes every check, and each classic misconfiguration fails the check made for it."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamobs.doctor import CHECKS, cli
from streamobs.simulator import RequestRecord, Simulator, SimulatorConfig
from tests.fixtures import settled
from tests.nginx import GZIP_EVENT_STREAMS, REFERENCE_CONFIG, STREAMING_SEED, Nginx, include

# Fast, so that every check stays short; tokens far enough apart (20 ms) that a busy
# machine does not make them arrive together.
FAST = SimulatorConfig(ttft=0.05, itl=0.02)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # One per test: a request a misconfigured path left running must not make the next
    # test's server look busy.
    with Simulator(FAST) as simulator:
        yield simulator


def doctor(
    url: str, capsys: pytest.CaptureFixture[str], *flags: str, only: tuple[str, ...] = ()
) -> tuple[int, dict[str, Any]]:
    """Run the command on ``url``; ``only`` runs just those checks. Late to read on a
    loaded machine, the doctor says inconclusive rather than guess: it is then asked
    again (up to five times in all); a settled answer, right or wrong, is returned."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    skips = [f"--skip={name}" for name in CHECKS if only and name not in only]
    argv = parser.parse_args([url, "--json", "--timeout", "10", *flags, *skips])

    def ask() -> tuple[int, dict[str, Any]]:
        code = cli.run(argv)
        return code, json.loads(capsys.readouterr().out)

    return settled(ask, lambda answer: "inconclusive" in answer[1]["verdicts"].values())


def checks(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in document["checks"]}


def abandoned(sim: Simulator) -> list[RequestRecord]:
    """Requests the doctor gave up on itself (the disconnect check's two)."""
    return [r for r in sim.records() if r.status != 200 or r.tokens_sent < 100][-2:]


def test_reference_config_passes_every_check(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # Included where users include it, in a server whose own settings compress event
    # streams: the snippet must win over them.
    with Nginx(sim.url, include(REFERENCE_CONFIG), server_config=GZIP_EVENT_STREAMS) as nginx:
        code, document = doctor(nginx.url, capsys, "--direct", sim.url, "--long-stream", "3")
    found = checks(document)
    assert {name: check["verdict"] for name, check in found.items()} == dict.fromkeys(
        CHECKS, "pass"
    ), json.dumps(document, indent=1)
    assert code == 0
    buffering = found["buffering"]["evidence"]
    assert buffering["path"]["largest_burst"] <= 2 and buffering["direct"]["largest_burst"] <= 2
    assert found["long-stream"]["evidence"]["stream"]["seconds"] >= 3
    # What the metrics showed is what the server did: both abandoned requests ended.
    for record in abandoned(sim):
        assert record.client_disconnected and record.complete
    # No connection the doctor opened is still being served.
    time.sleep(0.3)
    assert all(record.complete for record in sim.records())


def test_reference_config_works_as_a_server_level_snippet(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Nginx(sim.url, "", server_config=include(REFERENCE_CONFIG)) as nginx:
        code, document = doctor(
            nginx.url, capsys, only=("buffering", "compression", "headers", "errors")
        )
    assert code == 0, json.dumps(document, indent=1)
    assert set(document["verdicts"].values()) == {"pass", "skipped"}


def test_gzip_on_event_streams_fails_buffering_and_compression(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Nginx(sim.url, GZIP_EVENT_STREAMS) as nginx:
        code, document = doctor(
            nginx.url, capsys, "--direct", sim.url, only=("buffering", "compression", "headers")
        )
    found = checks(document)
    assert code == 1
    assert found["buffering"]["verdict"] == "fail"
    assert found["compression"]["verdict"] == "fail"
    for name in ("buffering", "compression"):
        assert "gzip off;" in found[name]["fix"]
    assert "proxy_buffering off;" in found["buffering"]["fix"]
    # Side by side: the whole stream in one burst through nginx, token by token directly.
    evidence = found["buffering"]["evidence"]
    assert evidence["path"]["largest_burst"] >= 16 and evidence["direct"]["largest_burst"] <= 2
    assert found["compression"]["evidence"]["accept_identity"]["buffered"] is False
    assert found["headers"]["verdict"] == "warn"
    assert found["headers"]["evidence"]["headers"]["Content-Encoding"] == "gzip"


def test_gzip_without_proxy_buffering_streams_but_is_flagged(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Nginx(sim.url, STREAMING_SEED + GZIP_EVENT_STREAMS) as nginx:
        code, document = doctor(nginx.url, capsys, only=("buffering", "compression"))
    assert code == 0
    assert document["verdicts"]["buffering"] == "pass"
    assert document["verdicts"]["compression"] == "warn"


def test_short_read_timeout_fails_the_long_stream_check(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Nginx(sim.url, STREAMING_SEED + "proxy_read_timeout 5s;") as nginx:
        code, document = doctor(nginx.url, capsys, "--long-stream", "6", only=("long-stream",))
    check = checks(document)["long-stream"]
    assert code == 1
    assert check["verdict"] == "fail"
    assert "proxy_read_timeout" in check["fix"]
    # nginx's read timeout counts between reads: a steady stream outlives it, while the
    # same request without streaming (silent until done) is answered 504 at 5 s.
    assert check["evidence"]["stream"]["outcome"] == "ok"
    silent = check["evidence"]["non_streamed"]
    assert silent["status"] == 504
    assert silent["seconds"] == pytest.approx(5.0, abs=0.5)


def test_ignore_client_abort_fails_the_disconnect_check(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with Nginx(sim.url, STREAMING_SEED + "proxy_ignore_client_abort on;") as nginx:
        code, document = doctor(nginx.url, capsys, only=("disconnect",))
        left_running = abandoned(sim)[-1]
        generated_then = len(left_running.token_generated_ns)
        time.sleep(0.3)
        generated_later = len(sim.request_log(left_running.response_id, wait=0).token_generated_ns)
        # Otherwise nginx's graceful shutdown would wait for the request it left running.
        sim.stop()
    check = checks(document)["disconnect"]
    assert code == 1
    assert check["verdict"] == "fail"
    assert "proxy_ignore_client_abort off;" in check["fix"]
    # nginx still closes upstream once a write to the departed client fails, so a client
    # leaving mid-stream is passed on; one leaving while the server is silent is not.
    assert check["evidence"]["mid_stream"]["running_down_after_close_seconds"] is not None
    assert check["evidence"]["while_silent"]["running_down_after_close_seconds"] is None
    # The simulator agrees: nobody told it, so it kept generating for nobody.
    assert not left_running.stream and not left_running.client_disconnected
    assert generated_later > generated_then
