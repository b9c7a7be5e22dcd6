"""The disconnect check against a simulator whose /metrics takes 2 s to answer while it
generates (as vLLM's does): it closes first and observes after, so a server that stops
passes and one that keeps generating for nobody fails, from the metrics alone and from
each abandoned request's own llm_request span."""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import pytest
import requests

from streamobs.doctor import CHECKS, cli
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, settled

METRICS_DELAY = 2.0


def doctor(url: str, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, Any]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    skips = [f"--skip={name}" for name in CHECKS if name != "disconnect"]
    args = parser.parse_args([url, "--json", "--timeout", "15", *flags, *skips])

    def ask() -> tuple[int, Any]:
        code = cli.run(args)
        document = json.loads(capsys.readouterr().out)
        (check,) = [c for c in document["checks"] if c["name"] == "disconnect"]
        return code, check

    # Asked again while inconclusive (the doctor read late on a loaded machine).
    return settled(ask, lambda answer: answer[1]["verdict"] == "inconclusive")


def test_the_simulators_metrics_are_slow_while_it_generates() -> None:
    config = SimulatorConfig(model="sim", ttft=0.01, itl=0.05, metrics_delay=METRICS_DELAY)
    with Simulator(config) as sim:
        body = {"model": "sim", "prompt": "x", "max_tokens": 100, "stream": True}
        done = threading.Event()

        def generate() -> None:
            with requests.post(sim.url + "/v1/completions", json=body, stream=True, timeout=30):
                done.wait(30)

        client = threading.Thread(target=generate, daemon=True)
        client.start()
        try:
            deadline = time.monotonic() + 20
            while not any(r.tokens_generated for r in sim.records()):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            started = time.monotonic()
            assert requests.get(sim.url + "/metrics", timeout=30).ok
            assert time.monotonic() - started >= METRICS_DELAY  # a lower bound: it waited
        finally:
            done.set()
            client.join(30)


@pytest.mark.parametrize("spans", [False, True], ids=["metrics", "spans"])
@pytest.mark.parametrize("keeps_generating", [False, True], ids=["stops", "keeps-generating"])
def test_disconnect_check_with_slow_metrics(
    spans: bool, keeps_generating: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = SimulatorConfig(
        model="sim",
        ttft=0.05,
        itl=0.02,
        metrics_delay=METRICS_DELAY,
        ignore_disconnect=keeps_generating,
        otlp_traces_endpoint=f"http://127.0.0.1:{port}/v1/traces" if spans else "",
        otlp_traces_batch_delay=0.2,
    )
    flags = ("--traces-receiver", f"127.0.0.1:{port}") if spans else ()
    with Simulator(config) as sim:
        code, check = doctor(sim.url, capsys, *flags)
        records = sim.records()
    details = "\n".join(check["details"])
    mid = check["evidence"]["mid_stream"]
    # It closes after its third content event; a loaded machine may read a few more in the
    # same read before it gets to close.
    read = mid["content_events_before_close"]
    assert read >= 3
    if keeps_generating:
        assert code == 1 and check["verdict"] == "fail", details
        assert check["evidence"]["mid_stream"]["tokens_generated_in_all"] > read
        assert "for nobody" in details
    else:
        assert code == 0 and check["verdict"] == "pass", details
        # What the doctor said is what the server did: both abandoned requests stopped.
        abandoned = [r for r in records if r.client_disconnected]
        assert len(abandoned) == 2
        assert all(r.tokens_generated < mid["max_tokens"] for r in abandoned)
        for key in ("mid_stream", "while_silent"):
            assert check["evidence"][key]["running_down_after_close_seconds"] is not None
    if spans:
        # Each abandoned request was judged by its own span: its usage is the simulator's.
        for key in ("mid_stream", "while_silent"):
            span = check["evidence"][key].get("span")
            assert span is not None, details
            (record,) = [r for r in records if r.traceparent and span["trace_id"] in r.traceparent]
            assert span["completion_tokens"] == record.tokens_generated
        assert "its own span says" in details
    else:
        assert "its own span" not in details
