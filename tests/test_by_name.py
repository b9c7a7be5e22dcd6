"""The one rule for merging families of one name from several sources."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from streamobs.collectors.by_name import ByName, merged_metrics


def _family(name: str, kind: str, doc: str, *values: float) -> Metric:
    family = Metric(name, doc, kind)
    family.samples = [Sample(name, {"i": str(i)}, v) for i, v in enumerate(values)]
    return family


def test_first_of_a_name_sets_its_type_and_order_is_first_seen() -> None:
    by_name: ByName[str] = ByName()
    assert by_name.add("a", "gauge", "a1")
    assert by_name.add("b", "counter", "b1")
    assert not by_name.add("a", "counter", "a2")  # refused: the text would be invalid
    assert by_name.add("a", "gauge", "a3")
    assert by_name.groups() == [["a1", "a3"], ["b1"]]


def test_merged_metrics_join_samples_and_drop_the_other_type() -> None:
    merged = merged_metrics(
        [
            _family("q", "gauge", "first", 1.0),
            _family("q", "counter", "other type", 2.0),
            _family("r", "gauge", "alone", 3.0),
            _family("q", "gauge", "second", 4.0),
        ]
    )
    assert [(m.name, m.type, m.documentation) for m in merged] == [
        ("q", "gauge", "first"),
        ("r", "gauge", "alone"),
    ]
    assert [s.value for s in merged[0].samples] == [1.0, 4.0]
