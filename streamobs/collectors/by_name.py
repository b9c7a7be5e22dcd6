"""Families from several sources, one per name: the rule every merge of families follows.

Prometheus rejects a text that announces a name twice or under two types, so families of
one name are grouped, in the order first seen, and a family whose type differs from the
first of its name is refused (the caller says which).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client.metrics_core import Metric

T = TypeVar("T")


class ByName(Generic[T]):
    """Families added one by one, grouped by name; the first of a name sets its type."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[str, list[T]]] = {}

    def add(self, name: str, kind: str, family: T) -> bool:
        """Group ``family`` under ``name``; False (and not kept) when the name has
        another type already."""
        group_kind, members = self._groups.setdefault(name, (kind, []))
        if group_kind != kind:
            return False
        members.append(family)
        return True

    def groups(self) -> list[list[T]]:
        return [members for _kind, members in self._groups.values()]


def merged_metrics(families: Iterable[Metric]) -> list[Metric]:
    """One metric per name, announced as the first of that name, with every sample of
    the families of its type (the others are dropped)."""
    by_name: ByName[Metric] = ByName()
    for family in families:
        by_name.add(family.name, family.type, family)
    return [joined(group) for group in by_name.groups()]


def joined(group: list[Metric]) -> Metric:
    """Families of one name and type as one (announced as the first)."""
    if len(group) == 1:
        return group[0]
    first = group[0]
    joined = Metric(first.name, first.documentation, first.type)
    joined.samples = [sample for family in group for sample in family.samples]
    return joined
