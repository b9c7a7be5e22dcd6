"""One target, several models, against the real simulator: each model is probed in turn
under its own model label and judged by its own SLO; a model the server does not serve
fails only its own series; ``model: all`` follows what ``/v1/models`` lists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.export.prometheus.probe import DEGRADED_REASONS
from streamobs.simulator import Simulator, SimulatorConfig
from tests.test_daemon import config_for, metrics, sample, wait_for

ATTEMPTS = "streamobs_probe_attempts_total"
FAILURES = "streamobs_probe_failures_total"
MODELS = ["sim", {"name": "sim-lora", "slo": {"ttft": "750ms", "objective": 0.995}},
          {"name": "gone", "slo": {"ttft": "3s", "tpot": "200ms"}}]  # fmt: skip


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    config = SimulatorConfig(model="sim", adapters="sim-lora", ttft=0.02, itl=0.005)
    with Simulator(config) as sim:
        yield sim


def started(simulator: Simulator, **settings: object) -> Daemon:
    daemon = Daemon(parse_config(config_for(simulator.url, **settings)))
    daemon.start()
    return daemon


def attempts(text: str, model: str) -> float:
    return sample(text, ATTEMPTS, target="sim", model=model) or 0.0


def exact(text: str, model: str) -> float:
    """Probes in the model's latency histograms (successful, with exact stamps)."""
    return sample(text, "streamobs_probe_ttft_seconds_count", target="sim", model=model) or 0.0


def degraded(text: str, model: str) -> float:
    """Successful probes kept out of the histograms: their stamps were not exact."""
    labels = {"target": "sim", "model": model}
    return sum(
        sample(text, "streamobs_probe_degraded_total", **labels, reason=reason) or 0.0
        for reason in DEGRADED_REASONS
    )


def failures(text: str, model: str) -> float:
    total = 0.0
    for outcome in ("connect", "http_status", "timeout_total", "stream_error", "truncated"):
        total += sample(text, FAILURES, target="sim", model=model, outcome=outcome) or 0.0
    return total


def test_three_models_three_sets_of_series_each_with_its_own_slo(simulator: Simulator) -> None:
    daemon = started(simulator, model=MODELS, slo={"ttft": "1500ms"})
    try:
        # Until each model has been probed three times, and each served model has a probe
        # in its histograms (a busy machine may leave a probe's stamps inexact: degraded).
        def probed(text: str) -> bool:
            return all(attempts(text, m) >= 3 for m in ("sim", "sim-lora", "gone")) and all(
                exact(text, m) >= 1 for m in ("sim", "sim-lora")
            )

        wait_for(lambda: probed(metrics(daemon)), timeout=60)
        text = metrics(daemon)
        # The two served models succeed, each in its own series.
        for model in ("sim", "sim-lora"):
            assert sample(text, "streamobs_probe_success", target="sim", model=model) == 1
            assert failures(text, model) == 0
            assert exact(text, model) + degraded(text, model) >= 2
        # The one it does not serve fails with its 404, and only its own series.
        assert sample(text, "streamobs_probe_success", target="sim", model="gone") == 0
        assert (sample(text, FAILURES, target="sim", model="gone", outcome="http_status") or 0) >= 3
        assert sample(text, "streamobs_probe_ttft_seconds_count", target="sim", model="gone") == 0
        # Each model's SLO: the target's, with no model label, for the model without one
        # of its own; the others by target and model. Every threshold is a bucket edge.
        ttft = "streamobs_slo_ttft_threshold_seconds"
        assert sample(text, ttft, target="sim") == 1.5
        assert sample(text, ttft, target="sim", model="sim") is None
        assert sample(text, ttft, target="sim", model="sim-lora") == 0.75
        assert sample(text, "streamobs_slo_objective_ratio", model="sim-lora") == 0.995
        assert sample(text, ttft, target="sim", model="gone") == 3.0
        assert sample(text, "streamobs_slo_tpot_threshold_seconds", model="gone") == 0.2
        for edge in ("0.75", "1.5", "3.0"):
            bucket = "streamobs_probe_ttft_seconds_bucket"
            assert sample(text, bucket, target="sim", model="sim-lora", le=edge) is not None
        assert sample(text, "streamobs_probe_tpot_seconds_bucket", le="0.2") is not None
        # The server served each model's requests under its own name; its /metrics, like
        # vLLM's, counts the adapter's under the model it is an adapter of.
        assert {r.model for r in simulator.records()} == {"sim", "sim-lora"}
        served = "vllm:request_success_total"
        length = {"finished_reason": "length"}
        wait_for(lambda: (sample(metrics(daemon), served, model_name="sim", **length) or 0) > 0)
        assert sample(metrics(daemon), served, model_name="sim-lora") is None
        # The status board judges each model by its own SLO.
        statuses = {s.model: s for s in daemon.runtime.status.snapshot()}
        assert set(statuses) == {"sim", "sim-lora", "gone"}
        assert statuses["sim"].slo.ttft_seconds == 1.5
        assert statuses["sim-lora"].slo.ttft_seconds == 0.75
        assert statuses["gone"].sli == 0.0 and statuses["sim"].sli == 1.0
        error = statuses["gone"].last_error
        assert error is not None and error.http_status == 404
        assert statuses["sim"].last_error is None and statuses["sim-lora"].last_error is None
        page = requests.get(f"http://127.0.0.1:{daemon.web.port}/", timeout=5).text
        assert "sim · sim-lora" in page and "0.75 s @ 99.50%" in page
    finally:
        daemon.stop()


def test_the_models_take_turns_one_probe_at_a_time(simulator: Simulator) -> None:
    daemon = started(simulator, model=MODELS[:2], interval="400ms")
    try:
        wait_for(lambda: len(simulator.records()) >= 8, timeout=30)
    finally:
        daemon.stop()
    records = simulator.records()[:8]
    models = [r.model for r in records]
    # In turn: sim, sim-lora, sim, ... (each model once per interval).
    assert models == [models[0], models[1]] * 4 and set(models) == {"sim", "sim-lora"}


def test_model_all_follows_the_list_and_its_cap(simulator: Simulator) -> None:
    simulator.reconfigure(adapters="lora-a,lora-b,lora-c")
    config = config_for(simulator.url, model="all")
    config["max_models_per_target"] = 3
    daemon = Daemon(parse_config(config))
    daemon.start()
    try:
        listed = ("sim", "lora-a", "lora-b")  # the first three /v1/models lists
        wait_for(lambda: all(attempts(metrics(daemon), m) >= 2 for m in listed), timeout=30)
        text = metrics(daemon)
        assert attempts(text, "lora-c") == 0 and all(failures(text, m) == 0 for m in listed)
        # An adapter unloaded: its probe 404s, the list is asked again, its series go,
        # and the next adapter listed takes its place.
        simulator.reconfigure(adapters="lora-a,lora-c")
        wait_for(lambda: attempts(metrics(daemon), "lora-b") == 0, timeout=30)
        wait_for(lambda: attempts(metrics(daemon), "lora-c") >= 2, timeout=30)
        text = metrics(daemon)
        assert sample(text, "streamobs_probe_success", target="sim", model="lora-a") == 1
        assert sample(text, "streamobs_probe_model_labels_overflow_total", target="sim") == 0
        models = {s.model for s in daemon.runtime.status.snapshot()}
        assert models == {"sim", "lora-a", "lora-c"}
    finally:
        daemon.stop()
