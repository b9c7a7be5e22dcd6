"""What a new user sees first: the start-up line, and the status page naming the model."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests

from streamobs import __version__
from streamobs.config import Overrides, parse_config
from streamobs.daemon import Daemon
from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import wait_for


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(model="sim-model", ttft=0.005, itl=0.002)) as sim:
        yield sim


def test_the_start_line_says_version_address_targets_and_collectors(
    simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    data = {
        "web": {"listen_address": "127.0.0.1:0"},
        "targets": [{"name": "one", "url": simulator.url, "interval": "1s"}],
    }
    overrides = Overrides(collectors={"gpu": False})
    caplog.set_level(logging.INFO, logger="streamobs.daemon")
    d = Daemon(overrides.apply(parse_config(data)), overrides=overrides)
    d.start()
    try:
        lines = [r.getMessage() for r in caplog.records if r.name == "streamobs.daemon"]
        line = next(m for m in lines if "listening on" in m)
        assert line == (
            f"streamobs {__version__} listening on http://127.0.0.1:{d.web.port} (no auth); "
            "probing 1 target(s): one; collectors: vllm, sglang, trtllm, llamacpp, tgi, "
            "litellm on, gpu off (--no-collector.gpu)"
        )
    finally:
        d.stop()


def test_the_status_page_names_the_discovered_model(simulator: Simulator) -> None:
    data = {
        "web": {"listen_address": "127.0.0.1:0"},
        "collectors": {"gpu": {"enabled": False}},
        "targets": [{"name": "one", "url": simulator.url, "interval": "200ms"}],
    }
    d = Daemon(parse_config(data))
    d.start()
    try:
        page = f"http://127.0.0.1:{d.web.port}/"
        wait_for(lambda: "sim-model (discovered)" in requests.get(page, timeout=5).text)
    finally:
        d.stop()
