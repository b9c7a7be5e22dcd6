"""Whatever an engine serves, the engine collector ends with a snapshot, exports without
raising, and what it exposes is valid exposition with bounded model labels (Hypothesis)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamobs.collectors.engines import EngineExporter, snapshot_from_text
from streamobs.collectors.engines.kinds import KINDS
from streamobs.labels import MAX_LABEL_CHARS

# The family names each kind reads, so generated text reaches the normalisation.
SOURCES = {k.name: sorted({n for s in k.sources.values() for n in s.names}) for k in KINDS}
LABELS = ("model_name", "model", "engine", "finished_reason", "le", "stage", "cache_source", "x")

label_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300).map(
    lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
).map(lambda v: repr(float(v)) if not isinstance(v, float) or math.isfinite(v) else str(v))


@st.composite
def exposition(draw: st.DrawFn) -> str:
    lines = []
    # Mostly one kind's families (so it is recognised and normalised), now and then others.
    names = st.sampled_from(SOURCES[draw(st.sampled_from(sorted(SOURCES)))])
    others = st.from_regex(r"[a-z_:][a-z0-9_:]{0,20}", fullmatch=True)
    for _ in range(draw(st.integers(0, 12))):
        base = draw(others) if draw(st.integers(0, 9)) == 0 else draw(names)
        kind = draw(st.sampled_from(["gauge", "counter", "histogram", "untyped"]))
        name = base.removesuffix("_total")
        lines.append(f"# TYPE {base if kind != 'counter' else name + '_total'} {kind}")
        for _ in range(draw(st.integers(0, 6))):
            suffix = draw(st.sampled_from(["", "_total", "_bucket", "_sum", "_count", "_created"]))
            labels = draw(st.dictionaries(st.sampled_from(LABELS), label_values, max_size=4))
            body = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{suffix}{{{body}}} {draw(values)}")
    return "\n".join(lines) + "\n"


def exported(text: str) -> str:
    snapshot = snapshot_from_text(text)
    registry = CollectorRegistry()
    registry.register(EngineExporter(lambda: {"e": snapshot}, targets={"e": None}, reexpose=True))
    return generate_latest(registry).decode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_any_text_ends_as_a_snapshot(text: str) -> None:
    snapshot = snapshot_from_text(text)
    assert snapshot.up or snapshot.error
    exported(text)  # and never raises on export


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exposition())
def test_any_exposition_exports_valid_text_with_bounded_models(text: str) -> None:
    output = exported(text)
    families = list(text_string_to_metric_families(output))  # valid exposition
    for family in families:
        if not family.name.startswith("streamobs_engine_"):
            continue
        for sample in family.samples:
            model = sample.labels["model"]
            assert len(model) <= MAX_LABEL_CHARS and "\n" not in model and '"' not in model
