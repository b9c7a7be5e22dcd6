"""``model:`` of a target: one name, ``all``, or a list of models, each with its own SLO
merged over the target's; every mistake is refused with the key's path."""

from __future__ import annotations

import pytest

from streamobs.config import ConfigError, parse_config
from streamobs.export.otlp import names
from streamobs.export.otlp.exporter import histogram_boundaries
from streamobs.targets import SLO, ModelConfig


def target(**settings: object) -> dict[str, object]:
    return {"name": "a", "url": "http://127.0.0.1:8000", **settings}


def test_one_name_all_or_unset() -> None:
    one, every, found = parse_config(
        {"targets": [target(model="m"), target(name="b", model="all"), target(name="c")]}
    ).targets
    assert one.models == (ModelConfig("m"),) and one.model == "m" and not one.all_models
    assert every.models == () and every.all_models and every.model is None
    assert found.models == () and not found.all_models and found.model is None


def test_a_list_of_models_each_with_its_own_slo_over_the_targets() -> None:
    config = parse_config(
        {
            "target_defaults": {"slo": {"objective": 0.995}},
            "targets": [
                target(
                    slo={"ttft": "1s"},
                    model=[
                        "base",
                        {"name": "lora-fast", "slo": {"ttft": "250ms"}},
                        {"name": "lora-big", "slo": {"tpot": "200ms", "objective": 0.95}},
                        {"name": "alias"},
                    ],
                )
            ],
        }
    )
    (t,) = config.targets
    assert [m.name for m in t.models] == ["base", "lora-fast", "lora-big", "alias"]
    assert t.model is None  # several: no one configured model
    assert t.slo == SLO(1.0, 0.1, 0.995)
    assert t.slo_for("base") == t.slo_for("alias") == t.slo_for("unlisted") == t.slo
    # Each key it does not set is the target's (which has the defaults').
    assert t.slo_for("lora-fast") == SLO(0.25, 0.1, 0.995)
    assert t.slo_for("lora-big") == SLO(1.0, 0.2, 0.95)
    assert [name for name, _ in t.model_slos()] == ["lora-fast", "lora-big"]
    # Every threshold is a bucket edge, in Prometheus and in OTLP.
    assert {0.25, 1.0} <= set(config.latency_buckets()["ttft"])
    assert 0.2 in config.latency_buckets()["tpot"]
    otlp = histogram_boundaries(config.targets, config.latency_buckets())
    assert {0.25, 1.0} <= set(otlp[names.TIME_TO_FIRST_CHUNK])
    assert 0.2 in otlp[names.TIME_PER_OUTPUT_CHUNK]


def test_a_model_slo_equal_to_the_targets_is_not_one_of_its_own() -> None:
    (t,) = parse_config(
        {"targets": [target(model=["a", {"name": "b", "slo": {"ttft": "2s"}}])]}
    ).targets
    assert t.model_slos() == () and t.slos() == (t.slo,)


def test_defaults_can_name_the_models_of_every_target() -> None:
    config = parse_config(
        {"target_defaults": {"model": "all"}, "targets": [target(), target(name="b", model="m")]}
    )
    assert config.targets[0].all_models and config.targets[1].model == "m"


def test_a_module_probes_one_model_its_first() -> None:
    config = parse_config(
        {"modules": {"two": {"model": ["x", "y"]}}, "targets": [target(model="m")]}
    )
    assert config.module_target("two", "http://h").models[0].name == "x"


@pytest.mark.parametrize(
    "model,message",
    [
        ([], "targets[0].model: expected a model name, all, or a non-empty list of models"),
        (5, "targets[0].model: expected a model name, all, or a non-empty list of models"),
        ({"name": "m"}, "targets[0].model: expected a model name, all, or a non-empty list"),
        (["m", 3], "targets[0].model[1]: expected a model name or {name: NAME, slo: {...}}"),
        (["m", ""], "targets[0].model[1]: expected a model name or {name: NAME, slo: {...}}"),
        ([{"slo": {"ttft": "1s"}}], "targets[0].model[0]: expected a model name or {name:"),
        (["m", "m"], "targets[0].model[1]: duplicate model 'm' (also targets[0].model[0])"),
        (
            ["m", {"name": "m", "slo": {"ttft": "1s"}}],
            "targets[0].model[1]: duplicate model 'm' (also targets[0].model[0])",
        ),
        (
            ["my model", "my_model"],
            "targets[0].model[1]: 'my_model' and targets[0].model[0] would share the model "
            "label 'my_model'",
        ),
        (
            ["m", "all"],
            "targets[0].model[1]: all stands alone (model: all, every model the server "
            "lists); a model named all is {name: all}",
        ),
        ([{"name": "m", "colour": "red"}], "targets[0].model[0].colour: unknown key"),
        ([{"name": "m", "slo": "fast"}], "targets[0].model[0].slo: expected a mapping"),
        (
            [{"name": "m", "slo": {"ttft": "soon"}}],
            "targets[0].model[0].slo.ttft: bad duration 'soon'",
        ),
        ([{"name": "m", "slo": {"objective": 1}}], "targets[0].model[0].slo.objective: must be"),
        ([{"name": "m", "slo": {"latency": "1s"}}], "targets[0].model[0].slo.latency: unknown"),
    ],
)
def test_bad_models_are_refused_with_the_keys_path(model: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"targets": [target(model=model)]})
    assert message in str(caught.value)


def test_a_list_longer_than_the_model_label_cap_is_refused() -> None:
    models = [f"m{i}" for i in range(4)]
    parse_config({"max_models_per_target": 4, "targets": [target(model=models)]})
    with pytest.raises(ConfigError) as caught:
        parse_config({"max_models_per_target": 3, "targets": [target(model=models)]})
    assert str(caught.value) == ("targets[0].model: 4 models, more than max_models_per_target (3)")
