"""Reading the checked-in pack: dashboard panels and queries, template variables, rules."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures import ROOT

RULES = ROOT / "alerts" / "streamobs.rules.yml"
RULE_TESTS = ROOT / "alerts" / "tests"
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager.example.yml"
DASHBOARDS = ROOT / "dashboards"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
GOLDEN_METRICS = ROOT / "tests" / "golden" / "metrics-daemon.txt"
GPU_HOST_SERIES = ROOT / "tests" / "data" / "pack" / "gpu-host.prom"

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$", re.S)


def dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """The dashboards in ``folder``: the checked-in ones unless a pack was written elsewhere."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.json"))
    }


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dashboard) if p.get("type") != "row")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"


def queries() -> list[PanelQuery]:
    found = []
    for name, dashboard in dashboards().items():
        for panel in data_panels(dashboard):
            for target in panel.get("targets", []):
                found.append(PanelQuery(name, panel["title"], target["refId"], target["expr"]))
    return found


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(metric{...}, label)`` as (series selector or None, label)."""
    found = _LABEL_VALUES.match(query.strip())
    if not found:
        raise ValueError(f"not a label_values() query: {query}")
    return found.group("match"), found.group("label")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Template variables replaced as Grafana would; an unknown one is an error."""

    def replace(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variables_used(text: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(text)}


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def rules(kind: str) -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if kind in r]


def eventually(check: Callable[[], list[str]], timeout: float) -> list[str]:
    """Run ``check`` (which returns problems) until it returns none or time runs out."""
    deadline = time.monotonic() + timeout
    problems = check()
    while problems and time.monotonic() < deadline:
        time.sleep(1)
        problems = check()
    return problems
