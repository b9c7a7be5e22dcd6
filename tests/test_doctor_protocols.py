"""streamobs doctor on every protocol against the simulator: each check builds its
requests through the probe code, so Responses and Messages get their own shapes (and a
buffered Messages stream is still caught)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest

from streamobs.doctor import cli
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import settled

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamobs doctor")
    cli.add_arguments(p)
    return p


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(ttft=0.02, itl=0.01)) as simulator:
        yield simulator


def doctor(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """The doctor's answer, asked again while a check is inconclusive (it read late)."""
    args = parser().parse_args([*argv, "--json", "--timeout", "10"])

    def ask() -> tuple[int, dict[str, Any]]:
        code = cli.run(args)
        return code, json.loads(capsys.readouterr().out)

    return settled(ask, lambda answer: "inconclusive" in answer[1]["verdicts"].values())


@pytest.mark.parametrize("endpoint", ["completions", "responses", "messages"])
def test_every_check_runs_and_passes_on_the_protocol(
    sim: Simulator, capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    code, document = doctor([sim.url, "--endpoint", endpoint, "--long-stream", "1.5"], capsys)
    assert set(document["verdicts"].values()) == {"pass"}, (document["verdicts"], document)
    assert code == 0, document
    assert document["url"] == sim.url + PATHS[endpoint]
    # Every request went to the protocol's own endpoint, streamed or not, and every one
    # that was not refused on purpose was served.
    records = sim.records()
    assert records and {r.endpoint for r in records} == {PATHS[endpoint]}
    assert {r.stream for r in records} == {True, False}
    checks = {c["name"]: c for c in document["checks"]}  # type: ignore[union-attr]
    errors = checks["errors"]["evidence"]
    assert (errors["bad_model"]["status"], errors["over_long"]["status"]) == (404, 400)
    assert "does not exist" in errors["bad_model"]["message"]


def test_the_endpoint_can_come_from_the_url(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    only = [f"--skip={name}" for name in ("compression", "headers", "disconnect", "long-stream")]
    code, document = doctor([sim.url + "/v1/messages", *only], capsys)
    assert code == 0 and document["url"] == sim.url + "/v1/messages"
    assert {r.endpoint for r in sim.records()} == {"/v1/messages"}


@pytest.mark.parametrize("endpoint", ["responses", "messages"])
def test_a_buffered_stream_fails_on_the_protocol(
    sim: Simulator, capsys: pytest.CaptureFixture[str], endpoint: str
) -> None:
    sim.reconfigure(buffered=True)
    only = [f"--skip={name}" for name in ("compression", "headers", "errors", "disconnect")]
    code, document = doctor([sim.url, "--endpoint", endpoint, *only, "--skip=long-stream"], capsys)
    assert code == 1
    assert document["verdicts"]["buffering"] == "fail"  # type: ignore[index]
