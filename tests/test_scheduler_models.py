"""Several models per target: the resolver's turns, ``model: all`` and its listing, and
the scheduler spreading a target's probes over its interval. Fake probes and model lists
(no network); timing checks are lower bounds only (a loaded machine makes gaps longer)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise

import pytest

from streamobs.config import parse_config
from streamobs.probe.models import ModelDiscoveryError
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec
from streamobs.reference import sample_result
from streamobs.scheduler import MODEL_LIST_INTERVAL, ModelResolver, Scheduler
from streamobs.targets import UNKNOWN_MODEL, TargetConfig


def one_target(**settings: object) -> TargetConfig:
    config = parse_config({"targets": [{"name": "t", "url": "http://127.0.0.1:8000", **settings}]})
    return config.targets[0]


def result(status: int | None = 200) -> ProbeResult:
    return replace(sample_result(), http_status=status)


class Listing:
    """A fake /v1/models: what it lists now, or an error; counts the calls."""

    def __init__(self, *models: str) -> None:
        self.models: list[str] | None = list(models)
        self.calls = 0

    def __call__(self, *args: object) -> list[str]:
        self.calls += 1
        if self.models is None:
            raise ModelDiscoveryError("http://127.0.0.1:8000/v1/models: connection refused")
        return list(self.models)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_listed_models_take_turns_and_a_404_changes_nothing() -> None:
    resolver = ModelResolver(one_target(model=["a", "b", "c"]), list_ids=Listing())
    turns = [resolver.next_model() for _ in range(7)]
    assert turns == ["a", "b", "c", "a", "b", "c", "a"] and resolver.count() == 3
    resolver.after(result(404))
    assert resolver.next_model() == "b"


def test_all_lists_the_models_up_to_the_cap_and_again_when_due() -> None:
    listing, clock = Listing("base", "lora-1", "lora-2", "lora-3"), Clock()
    changes: list[tuple[str, ...]] = []
    resolver = ModelResolver(
        one_target(model="all"), list_ids=listing, max_models=3, on_change=changes.append,
        clock=clock,
    )  # fmt: skip
    assert [resolver.next_model() for _ in range(4)] == ["base", "lora-1", "lora-2", "base"]
    assert listing.calls == 1 and changes == [("base", "lora-1", "lora-2")]
    # Asked again only when the list is old, or after a 404 of one of its models.
    listing.models = ["base", "lora-2"]
    clock.now += MODEL_LIST_INTERVAL - 1
    resolver.next_model()
    assert listing.calls == 1
    resolver.after(result(404))
    resolver.next_model()
    assert listing.calls == 2 and resolver.models() == ("base", "lora-2")
    assert changes[-1] == ("base", "lora-2")
    listing.models = ["base", "lora-2", "lora-9"]
    clock.now += MODEL_LIST_INTERVAL
    assert resolver.models() == ("base", "lora-2", "lora-9") and listing.calls == 3


def test_all_keeps_its_models_while_the_list_cannot_be_had() -> None:
    listing, clock = Listing(), Clock()
    listing.models = None
    resolver = ModelResolver(one_target(model="all"), list_ids=listing, clock=clock)
    # Nothing listed yet: the probe still runs (and fails), under model="unknown".
    assert resolver.next_model() == UNKNOWN_MODEL and resolver.next_model() == UNKNOWN_MODEL
    assert listing.calls == 2  # asked before each probe until it answers
    listing.models = ["a", "b"]
    assert resolver.models() == ("a", "b")
    listing.models = None
    clock.now += MODEL_LIST_INTERVAL
    assert resolver.models() == ("a", "b") and listing.calls == 4
    assert resolver.models() == ("a", "b") and listing.calls == 4  # not again at once


def test_all_gives_one_model_per_label() -> None:
    listing = Listing("my model", "my_model", "other")
    resolver = ModelResolver(one_target(model="all"), list_ids=listing)
    assert resolver.models() == ("my model", "other")


def test_a_discovered_model_is_asked_again_after_a_404() -> None:
    names = iter(["first", "second"])
    resolver = ModelResolver(one_target(), discover=lambda *a: next(names))
    assert resolver.next_model() == "first" and resolver.next_model() == "first"
    resolver.after(result(404))
    assert resolver.next_model() == "second"


class Probes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[tuple[str, float]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self, spec: ProbeSpec) -> ProbeResult:
        with self.lock:
            self.starts.append((spec.model, time.monotonic()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.01)
        with self.lock:
            self.in_flight -= 1
        return replace(sample_result(), model=spec.model)

    def taken(self) -> Sequence[tuple[str, float]]:
        with self.lock:
            return list(self.starts)


@pytest.mark.parametrize("models", [["a", "b", "c"], "all"])
def test_each_model_once_per_interval_the_targets_probes_spread_and_never_overlapping(
    models: object,
) -> None:
    probes = Probes()
    target = one_target(model=models, interval="600ms")
    scheduler = Scheduler([target], 4, lambda t, r: None, probes, list_ids=Listing("a", "b", "c"))
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while len(probes.taken()) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop(5)
    starts = probes.taken()[:10]
    assert len(starts) == 10 and probes.most_in_flight == 1
    assert [m for m, _ in starts] == ["a", "b", "c"] * 3 + ["a"]
    # A third of the interval between the target's probes, a whole one between a model's
    # (at least: a late timer only makes them longer; medians, so that one probe whose
    # thread waited for a CPU before it started cannot decide).
    gaps = [b - a for (_, a), (_, b) in pairwise(starts)]
    assert statistics.median(gaps) >= 0.2 * 0.9
    model_gaps = [starts[i + 3][1] - starts[i][1] for i in range(len(starts) - 3)]
    assert statistics.median(model_gaps) >= 0.6 * 0.9
