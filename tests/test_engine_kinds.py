"""Every engine kind: its fixture parses, is recognised as its kind, and normalises to the
expected series (golden files under tests/golden/engines/; STREAMOBS_UPDATE_GOLDEN=1
rewrites them). An exposition of no known kind, or of several, is never guessed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamobs.collectors.engines import EngineExporter, snapshot_from_text
from streamobs.collectors.engines.kinds import KIND_NAMES, KINDS, detect, kind_spec
from streamobs.collectors.engines.names import NORMALISED_BY_NAME
from streamobs.collectors.engines.normalise import MAX_MODELS_PER_ENGINE
from streamobs.labels import MAX_LABEL_CHARS, OVERFLOW

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden" / "engines"

# Each kind's fixtures (produced by the engine's own code or written from its source; each
# folder's README says which), by the name of the golden file they normalise to.
FIXTURES: dict[str, tuple[str, Path]] = {
    "vllm-v0": ("vllm", DATA / "vllm" / "v0-metrics.txt"),
    "vllm-v1": ("vllm", DATA / "vllm" / "v1-metrics.txt"),
    "vllm-0.32-capture": ("vllm", DATA / "vllm-0.32-cpu" / "metrics.txt"),
    "vllm-0.33": ("vllm", DATA / "vllm" / "v033-metrics.txt"),
    "sglang": ("sglang", DATA / "sglang" / "metrics.txt"),
    "trtllm": ("trtllm", DATA / "trtllm" / "metrics.txt"),
    "llamacpp": ("llamacpp", DATA / "llamacpp" / "metrics.txt"),
    "tgi": ("tgi", DATA / "tgi" / "metrics.txt"),
    "litellm": ("litellm", DATA / "litellm" / "metrics.txt"),
}


def normalised_text(text: str, kind: str | None = None) -> str:
    """Only the normalised series of one engine named after its kind, as exposed."""
    snapshot = snapshot_from_text(text, kind=kind)
    registry = CollectorRegistry()
    registry.register(EngineExporter(lambda: {"e": snapshot}, targets={"e": kind}))
    lines = generate_latest(registry).decode().splitlines(keepends=True)
    return "".join(
        line for line in lines if "streamobs_engine_" in line and not line.startswith("# HELP")
    )


def test_every_kind_has_a_fixture() -> None:
    assert sorted({kind for kind, _ in FIXTURES.values()}) == sorted(KIND_NAMES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_is_recognised_as_its_kind(name: str) -> None:
    kind, path = FIXTURES[name]
    snapshot = snapshot_from_text(path.read_text())
    assert snapshot.up, snapshot.error
    assert snapshot.kind == kind, snapshot.kind_unknown
    assert snapshot.normalised, "a fixture that feeds no normalised family"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_normalises_to_the_golden_series(name: str) -> None:
    kind, path = FIXTURES[name]
    text = normalised_text(path.read_text())
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("STREAMOBS_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    # Recognised or configured, the same series.
    assert normalised_text(path.read_text(), kind=kind) == text
    assert f'kind="{kind}"' in text


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_only_families_the_kind_maps_are_present(name: str) -> None:
    kind, path = FIXTURES[name]
    spec = kind_spec(kind)
    snapshot = snapshot_from_text(path.read_text())
    for family in snapshot.normalised:
        assert family.spec.name in spec.sources
        assert family.source in spec.sources[family.spec.name].names
        assert family.spec is NORMALISED_BY_NAME[family.spec.name]


def test_every_kind_table_names_only_normalised_families() -> None:
    for kind in KINDS:
        assert set(kind.sources) <= set(NORMALISED_BY_NAME), kind.name
        for source in kind.sources.values():
            assert all(name.startswith(kind.prefixes) for name in source.names), kind.name


MIXED = (
    "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1.0\n"
    "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 2.0\n"
)
UNKNOWN = "# TYPE myengine_queue_depth gauge\nmyengine_queue_depth 3.0\n"


@pytest.mark.parametrize(
    ("text", "reason"), [(MIXED, "several engine kinds (sglang, vllm)"), (UNKNOWN, "no family")]
)
def test_unknown_or_mixed_exposition_is_not_guessed(text: str, reason: str) -> None:
    snapshot = snapshot_from_text(text)
    assert snapshot.up
    assert snapshot.kind is None and snapshot.normalised == ()
    assert reason in snapshot.kind_unknown


def test_unknown_kind_is_said_once_and_still_reexposed(caplog: pytest.LogCaptureFixture) -> None:
    snapshot = snapshot_from_text(UNKNOWN + "# TYPE process_open_fds gauge\nprocess_open_fds 9\n")
    registry = CollectorRegistry()
    exporter = EngineExporter(
        lambda: {"e": snapshot}, targets={"e": None}, reexpose=True, engine_families_only=True
    )
    registry.register(exporter)
    with caplog.at_level(logging.INFO, logger="streamobs.collectors.engines.export"):
        for _ in range(3):
            output = generate_latest(registry).decode()
    assert "myengine_queue_depth 3.0" in output
    assert "process_open_fds" not in output  # would clash with streamobs' own
    assert "streamobs_engine_requests_waiting{" not in output
    assert 'streamobs_collector_up{collector="engine",target="e"} 1.0' in output
    said = [r.getMessage() for r in caplog.records if "kind unknown" in r.getMessage()]
    assert len(said) == 1 and "set kind" in said[0]


def test_configured_kind_wins_over_recognition() -> None:
    # An SGLang server configured as vLLM: no vLLM family, so nothing normalised, and
    # the configured kind stays (no guess over the operator's word).
    text = (DATA / "vllm" / "v1-metrics.txt").read_text()
    snapshot = snapshot_from_text(text, kind="sglang")
    assert snapshot.kind == "sglang" and snapshot.normalised == ()


def test_detection_reads_prefixes_only() -> None:
    assert detect(["vllm:x", "process_open_fds"]).kind == "vllm"
    assert detect(["trtllm_kv_cache_utilization"]).kind == "trtllm"
    assert detect(["python_gc_objects_collected_total"]).kind is None


def test_sglang_underscore_names_of_older_releases_give_the_same_series() -> None:
    # Older SGLang spelled its families sglang_x; newer ones sglang:x.
    text = (DATA / "sglang" / "metrics.txt").read_text()
    old = text.replace("sglang:", "sglang_")
    assert normalised_text(old) == normalised_text(text)
    assert snapshot_from_text(old).kind == "sglang"


def test_llamacpp_kv_usage_of_older_servers_is_read() -> None:
    # llama-server exposed kv_cache_usage_ratio before it was dropped; a current one has none.
    text = (DATA / "llamacpp" / "metrics.txt").read_text()
    older = text + (
        "# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.25\n"
    )
    ratio = "streamobs_engine_kv_cache_usage_ratio"
    assert f'{ratio}{{engine="e",engine_index="0",kind="llamacpp",model=""}} 0.25' in (
        normalised_text(older)
    )
    assert ratio + "{" not in normalised_text(text)


def test_model_names_from_an_engine_are_bounded_labels() -> None:
    # A hostile or odd engine: a huge model name, odd characters, and 200 models.
    lines = ["# TYPE vllm:num_requests_running gauge"]
    lines.append(f'vllm:num_requests_running{{model_name="{"x" * 100_000}"}} 1.0')
    lines.append('vllm:num_requests_running{model_name="bad name\\n{}"} 1.0')
    lines += [f'vllm:num_requests_running{{model_name="m{i}"}} 1.0' for i in range(200)]
    snapshot = snapshot_from_text("\n".join(lines) + "\n")
    family = snapshot.normalised_family("streamobs_engine_requests_running")
    assert family is not None
    models = {s.labels[0]: s.value for s in family.scalars}
    assert len(models) == MAX_MODELS_PER_ENGINE + 1
    assert all(len(m) <= MAX_LABEL_CHARS and "\n" not in m and " " not in m for m in models)
    # Nothing lost: the models past the cap are summed under "(other)".
    assert sum(models.values()) == 202.0
    assert models[OVERFLOW] == 202.0 - MAX_MODELS_PER_ENGINE
