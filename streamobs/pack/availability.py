"""Which engine kinds can answer a query: the normalised ``streamobs_engine_*`` families it
reads, against each kind's table (``collectors/engines/kinds.py``). A panel or rule that
reads a family some kinds lack says so, so an empty panel on TGI is explained, not broken:
the "metric contract" the tests check against a real Prometheus per kind."""

from __future__ import annotations

import re
from collections.abc import Iterable

from streamobs.collectors.engines.kinds import KINDS, KindSpec
from streamobs.collectors.engines.names import NORMALISED_BY_NAME

_ENGINE_NAME = re.compile(r"\bstreamobs_engine_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum")


def engine_families(exprs: Iterable[str]) -> frozenset[str]:
    """The normalised engine families the expressions read."""
    found = set()
    for expr in exprs:
        for name in _ENGINE_NAME.findall(expr):
            for suffix in _SUFFIXES:
                if name not in NORMALISED_BY_NAME and name.endswith(suffix):
                    name = name.removesuffix(suffix)
            if name in NORMALISED_BY_NAME:
                found.add(name)
    return frozenset(found)


def _having(needed: frozenset[str]) -> tuple[KindSpec, ...]:
    return tuple(kind for kind in KINDS if needed <= set(kind.sources))


def kinds_with(exprs: Iterable[str]) -> tuple[KindSpec, ...]:
    """The kinds that have every family the expressions read."""
    return _having(engine_families(exprs))


def kinds_without(exprs: Iterable[str]) -> tuple[KindSpec, ...]:
    """The kinds that lack a family the expressions need (so they return no data there)."""
    having = kinds_with(exprs)
    return tuple(kind for kind in KINDS if kind not in having)


def kinds_sometimes_absent(exprs: Iterable[str]) -> tuple[tuple[KindSpec, str], ...]:
    """The kinds that have the families but may serve one of them not at all (SGLang's
    retractions until the first one), each with when: no data there is no fault."""
    needed = sorted(engine_families(exprs))
    found = []
    for kind in _having(frozenset(needed)):
        when = [kind.sources[name].absent_when for name in needed]
        when = [w for w in when if w]
        if when:
            found.append((kind, "; ".join(when)))
    return tuple(found)


def unavailable_kinds(exprs: Iterable[str]) -> str:
    """The names of the kinds without data for the expressions, comma separated."""
    return ", ".join(kind.name for kind in kinds_without(exprs))


def unavailable_note(exprs: Iterable[str]) -> str:
    """ " Not available on ...", or "" when every kind has what the expressions read."""
    exprs = list(exprs)
    lacking = kinds_without(exprs)
    note = ""
    if lacking:
        names = ", ".join(kind.name for kind in lacking)
        note += f" Not available on engine kinds {names} (they expose no such metric)."
    for kind, when in kinds_sometimes_absent(exprs):
        note += f" On {kind.name} absent {when}."
    return note
