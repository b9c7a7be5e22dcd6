"""The poller's re-exposed text: each engine's rendered once per snapshot of its own, and
the whole byte-identical to rendering every engine's families at once."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamobs.collectors.engines import EngineExporter, snapshot_from_text
from streamobs.collectors.engines.poller import EnginePoller, ScrapeTarget
from streamobs.collectors.engines.settings import EngineCollectorConfig
from tests.fixtures import FIXTURES

CAPTURE = (FIXTURES / "metrics.txt").read_text()
ENGINES = ("a", "b", "c")


def poller() -> EnginePoller:
    targets = [ScrapeTarget(name, f"http://127.0.0.1:1/{name}", 15.0) for name in ENGINES]
    return EnginePoller(targets, EngineCollectorConfig())


def at_once(p: EnginePoller) -> bytes:
    """Every engine's families rendered together, as one registry would."""
    exporter = EngineExporter(
        p.latest,
        targets=dict.fromkeys(ENGINES),
        reexpose=True,
        engine_families_only=True,
        normalise=False,
    )

    class Families:
        def collect(self) -> list:  # type: ignore[type-arg]
            return exporter.export().families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    return generate_latest(registry)


def test_reexposed_text_is_what_rendering_all_at_once_gives() -> None:
    p = poller()
    for name in ENGINES:
        p.accept(name, snapshot_from_text(CAPTURE))
    text = p.reexposed_text()
    assert text == at_once(p)
    assert text.count(b"# TYPE vllm:generation_tokens_total counter") == 1
    # A new snapshot of one engine: the text follows it, the others' unchanged.
    p.accept("b", snapshot_from_text(CAPTURE.replace("} 1604.0", "} 1700.0")))
    text = p.reexposed_text()
    assert text == at_once(p)
    assert (
        b'vllm:generation_tokens_total{engine="b",exported_engine="0",model_name="tiny"} 1700.0'
        in text
    )
    assert (
        b'vllm:generation_tokens_total{engine="a",exported_engine="0",model_name="tiny"} 1604.0'
        in text
    )


def test_only_the_engine_with_a_new_snapshot_is_rendered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = poller()
    for name in ENGINES:
        p.accept(name, snapshot_from_text(CAPTURE))
    p.reexposed_text()
    rendered: list[str] = []
    real = EngineExporter.export

    def counting(self: EngineExporter, kinds: object = None, only: str | None = None) -> object:
        if only is not None:
            rendered.append(only)
        return real(self, kinds, only)  # type: ignore[arg-type]

    monkeypatch.setattr(EngineExporter, "export", counting)
    p.accept("c", snapshot_from_text(CAPTURE))
    p.reexposed_text()
    assert rendered == ["c"]


def test_a_family_another_engine_serves_with_another_type_is_skipped_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = poller()
    p.accept("a", snapshot_from_text("# TYPE vllm:thing gauge\nvllm:thing 1.0\n"))
    p.accept("b", snapshot_from_text("# TYPE vllm:thing untyped\nvllm:thing 2.0\n"))
    p.accept("c", snapshot_from_text("# TYPE vllm:thing gauge\nvllm:thing 3.0\n"))
    with caplog.at_level(logging.WARNING, logger="streamobs.collectors.engines.poller"):
        for _ in range(3):
            p.accept("c", snapshot_from_text("# TYPE vllm:thing gauge\nvllm:thing 3.0\n"))
            text = p.reexposed_text().decode()
    assert text.count("# TYPE vllm:thing") == 1
    assert 'vllm:thing{engine="a"} 1.0' in text and 'vllm:thing{engine="c"} 3.0' in text
    assert 'engine="b"' not in text
    warnings = [r.getMessage() for r in caplog.records if "another type" in r.getMessage()]
    assert len(warnings) == 1 and "b: vllm:thing" in warnings[0]


def test_an_engine_with_no_families_keeps_its_empty_text() -> None:
    # An engine that is down renders nothing; kept as such, it is no missing text later.
    p = poller()
    p.accept("a", snapshot_from_text(CAPTURE))
    p.accept("b", snapshot_from_text("not metrics {"))  # down: no families
    p.reexposed_text()
    p.accept("a", snapshot_from_text(CAPTURE))
    text = p.reexposed_text()
    assert text == at_once(p) and b'engine="a"' in text
    assert all(h.up for h in p.export().health if h.target == "a")
