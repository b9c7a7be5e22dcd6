"""Model names from servers as label values: bounded length, characters and count."""

from __future__ import annotations

import itertools
import time

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.export.prometheus.model_labels import (
    MAX_LABEL_CHARS,
    OVERFLOW,
    ModelLabels,
    model_label,
)
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec
from tests.fixtures import wait_for


@pytest.mark.parametrize(
    "name",
    ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B:latest", "gpt-4o@2024+a=b", "tiny"],
)
def test_ordinary_names_are_unchanged(name: str) -> None:
    assert model_label(name) == name


def test_odd_names_are_made_safe_and_bounded() -> None:
    assert model_label('a b\n"{}\u2028é') == "a_b______"
    assert model_label("") == "_"
    huge = "m" * (1 << 20)
    assert len(model_label(huge)) == MAX_LABEL_CHARS
    # Two long names that share their first 128 characters still get two labels.
    assert model_label(huge) != model_label(huge + "2")
    assert model_label(huge) == model_label(huge)
    assert model_label(OVERFLOW) != OVERFLOW


def _target(name: str, model: str | None = None) -> object:
    data: dict[str, object] = {"name": name, "url": "http://h"}
    if model:
        data["model"] = model
    return parse_config({"targets": [data]}).targets[0]


def _overflow(registry: CollectorRegistry, target: str) -> float | None:
    return registry.get_sample_value(
        "streamobs_probe_model_labels_overflow_total", {"target": target}
    )


def test_a_target_has_at_most_max_models_labels_and_the_excess_is_counted() -> None:
    registry = CollectorRegistry()
    labels = ModelLabels(registry)
    labels.configure([_target("a", "configured")], max_models=3)  # type: ignore[list-item]
    got = [labels.label("a", f"m{i}") for i in range(10)]
    assert got == ["m0", "m1"] + [OVERFLOW] * 8  # the configured model counts first
    assert labels.label("a", "configured") == "configured" and labels.label("a", "m1") == "m1"
    assert _overflow(registry, "a") == 8
    assert labels.label("b", "x") == "x"  # per target
    assert _overflow(registry, "b") is None  # not configured and never over: no series
    labels.configure([_target("b", None)], max_models=3)  # type: ignore[list-item]
    assert _overflow(registry, "a") is None  # a reload without "a": its series are gone
    assert _overflow(registry, "b") == 0


def test_a_server_naming_a_new_huge_model_every_time_cannot_grow_the_series() -> None:
    counter = itertools.count()

    def discover(*args: object) -> str:  # a new 1 MiB model id on every /v1/models
        return f"model-{next(counter)}-" + "x" * (1 << 20)

    def probe(spec: ProbeSpec) -> ProbeResult:  # and 404 for it, so it is asked again
        return ProbeResult(
            url=spec.target.request_url,
            endpoint=spec.target.endpoint,
            model=spec.model,
            outcome=Outcome.HTTP_STATUS,
            start_ns=time.perf_counter_ns(),
            started_at=time.time(),
            http_status=404,
            response_model=spec.model,
        )

    config = parse_config(
        {
            "web": {"listen_address": "127.0.0.1:0"},
            "max_models_per_target": 3,
            "collectors": {"engines": {"enabled": False}, "gpu": {"enabled": False}},
            "targets": [{"name": "t", "url": "http://127.0.0.1:9", "interval": "100ms"}],
        }
    )
    d = Daemon(config, probe=probe, discover=discover)
    d.start()
    url = f"http://127.0.0.1:{d.web.port}/metrics"

    def overflowed() -> float:
        for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
            for s in family.samples:
                if s.name == "streamobs_probe_model_labels_overflow_total":
                    return s.value
        return 0.0

    try:
        wait_for(lambda: overflowed() >= 3)
        text = requests.get(url, timeout=10).text
    finally:
        d.stop()
    models = set()
    attempts = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "model" in s.labels:
                models.add(s.labels["model"])
            if s.name == "streamobs_probe_attempts_total":
                attempts += s.value
    assert len(models) == 4 and OVERFLOW in models  # three models, then one for the rest
    assert all(len(m) <= MAX_LABEL_CHARS for m in models)
    assert attempts >= 6  # every probe still counts for the target
    assert max(len(line) for line in text.splitlines()) < 2000
    for status in d.runtime.status.snapshot():
        assert all(len(r.model) <= MAX_LABEL_CHARS for r in status.recent)
        assert all(len(r.response_model or "") <= MAX_LABEL_CHARS for r in status.recent)
