"""An engine's ``/metrics`` text into immutable families that re-expose exactly as served.

prometheus_client's text parser renames things its exposition later renames back, except
in two cases this module repairs so a parse-then-expose round trip gives the engine's own
sample names:

- ``# TYPE x_created gauge`` families, which prometheus_client writes after every counter
  and histogram in the text format, are folded back into their parent as ``_created``
  samples. The text exposition splits them out again exactly as the engine wrote them, and the
  OpenMetrics exposition (which Prometheus negotiates) does not see two clashing families.
- a counter declared without ``_total`` (``# TYPE foo counter`` / ``foo 1``) gets
  ``_total`` appended to its samples by the parser; the original name is restored and the
  family is kept untyped, since the exposition would otherwise announce ``foo_total``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

_CREATED = "_created"
_TOTAL = "_total"
# Families whose creation time prometheus_client exposes as a separate ``_created`` gauge.
_HAS_CREATED = frozenset({"counter", "histogram", "summary"})


@dataclass(frozen=True, slots=True)
class ParsedFamily:
    """One metric family as prometheus_client represents it (counters named without
    ``_total``; ``_created`` samples inside their parent)."""

    name: str
    type: str
    documentation: str
    samples: tuple[Sample, ...]

    @property
    def exposed_name(self) -> str:
        """The name on the family's ``# TYPE`` line in the text format."""
        return self.name + _TOTAL if self.type == "counter" else self.name


def parse_families(text: str) -> tuple[ParsedFamily, ...]:
    """Parse Prometheus text format; raises ValueError (or another parser error) on
    text that is not valid exposition."""
    plain_counters = _counters_declared_without_total(text)
    families = [
        _restore_plain_counter(
            ParsedFamily(m.name, m.type, m.documentation, tuple(m.samples)), plain_counters
        )
        for m in text_string_to_metric_families(text)
    ]
    return _fold_created(families)


def _counters_declared_without_total(text: str) -> frozenset[str]:
    names = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) != 4 or parts[:2] != ["#", "TYPE"]:
            continue
        if parts[3].strip() == "counter" and not parts[2].endswith(_TOTAL):
            names.add(parts[2])
    return frozenset(names)


def _restore_plain_counter(family: ParsedFamily, plain_counters: frozenset[str]) -> ParsedFamily:
    if family.type != "counter" or family.name not in plain_counters:
        return family
    renamed = family.name + _TOTAL
    samples = tuple(
        s._replace(name=family.name) if s.name == renamed else s for s in family.samples
    )
    return ParsedFamily(family.name, "unknown", family.documentation, samples)


def _fold_created(families: list[ParsedFamily]) -> tuple[ParsedFamily, ...]:
    parents = {f.name for f in families if f.type in _HAS_CREATED}
    created: dict[str, tuple[Sample, ...]] = {}
    kept: list[ParsedFamily] = []
    for family in families:
        parent = _created_parent(family, parents)
        if parent is None:
            kept.append(family)
        else:
            created[parent] = created.get(parent, ()) + family.samples
    return tuple(
        ParsedFamily(f.name, f.type, f.documentation, _interleave(f.samples, created.pop(f.name)))
        if f.name in created and f.type in _HAS_CREATED
        else f
        for f in kept
    )


def _interleave(samples: tuple[Sample, ...], created: tuple[Sample, ...]) -> tuple[Sample, ...]:
    """Each ``_created`` sample right after the samples with its labels, as OpenMetrics
    requires (one series' samples together) and prometheus_client itself orders them."""
    groups: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for sample in (*samples, *created):
        groups.setdefault(_series_key(sample), []).append(sample)
    return tuple(sample for group in groups.values() for sample in group)


def _series_key(sample: Sample) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("le", "quantile")))


def _created_parent(family: ParsedFamily, parents: set[str]) -> str | None:
    """The family a ``x_created`` gauge belongs to, if it is one."""
    if family.type != "gauge" or not family.name.endswith(_CREATED):
        return None
    parent = family.name[: -len(_CREATED)]
    if parent not in parents or any(s.name != family.name for s in family.samples):
        return None
    return parent
