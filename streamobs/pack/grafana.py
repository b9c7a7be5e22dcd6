"""Dashboard JSON from a small declarative layer: what imports into any Grafana.

Dashboards in ``dashboards.py`` are lists of rows of :class:`Panel` specs; this module
turns them into dashboard JSON (schema 41, Grafana 11) that imports into any Grafana, file
provisioning included: a ``datasource`` variable that every panel and query uses
(``__inputs`` alone is ignored by provisioning), a stable ``uid``, ``id: null``,
sequential panel ids, and a unit and a description on every panel. Plain dictionaries, so
``streamobs pack`` needs nothing beyond the standard library to write them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamobs.pack.availability import unavailable_note

SCHEMA_VERSION = 41
GRID_WIDTH = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's enums, by the values its JSON model stores.
_CROSSHAIR = 1  # graphTooltip: shared crosshair
_REFRESH_ON_TIME_RANGE_CHANGE = 2
_SORT_ALPHABETICAL_ASC = 1


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    kind: Literal["timeseries", "stat", "heatmap"]
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    # Colour steps, lowest first: (value, colour); the first value is None (-Infinity).
    steps: tuple[tuple[float | None, str], ...] = ()
    # Draw the steps as dashed lines on a time series (e.g. burn factors, SLO threshold).
    threshold_lines: bool = False
    stack: bool = False
    # One copy of the panel per value of this variable, side by side (two to a line).
    repeat: str | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A query variable, ``label_values(<metric>{<matchers>}, <label>)``."""

    name: str
    label: str
    query: str
    multi: bool = True


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ()
    refresh: str = "30s"
    time_from: str = "now-6h"
    links: tuple[tuple[str, str], ...] = field(default=())  # (title, url)


def _query(query: Query, ref_id: str, heatmap_format: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "datasource": dict(DATASOURCE),
        "expr": query.expr,
        "instant": query.instant,
        "legendFormat": query.legend,
        "range": not query.instant,
        "refId": ref_id,
    }
    if heatmap_format:
        out["format"] = "heatmap"
    return out


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [
            {"color": colour, "value": None if value is None else float(value)}
            for value, colour in steps
        ],
    }


_STAT_OPTIONS: dict[str, Any] = {
    "colorMode": "value",
    "graphMode": "none",
    "justifyMode": "auto",
    "orientation": "auto",
    "percentChangeColorMode": "standard",
    "reduceOptions": {"calcs": []},
    "showPercentChange": False,
    "textMode": "auto",
    "wideLayout": True,
}


def _heatmap_options(unit: str) -> dict[str, Any]:
    return {
        "calculate": False,
        "cellGap": 1,
        "color": {
            "exponent": 0,
            "fill": "",
            "mode": "scheme",
            "reverse": False,
            "scheme": "Oranges",
            "steps": 0,
        },
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-09},
        "legend": {"show": True},
        "selectionMode": "x",
        "showValue": "auto",
        "tooltip": {"mode": "single"},
        "yAxis": {"unit": unit},
    }


def _panel(spec: Panel, grid: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": spec.unit}
    panel: dict[str, Any] = {
        "datasource": dict(DATASOURCE),
        "description": spec.description + unavailable_note(q.expr for q in spec.queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": grid,
        "repeatDirection": "h",
        "targets": [
            _query(query, chr(ord("A") + index), spec.kind == "heatmap")
            for index, query in enumerate(spec.queries)
        ],
        "title": spec.title,
        "transparent": False,
        "type": spec.kind,
    }
    if spec.repeat is not None:
        panel["repeat"] = spec.repeat
        panel["maxPerRow"] = 2
    if spec.kind == "timeseries":
        custom: dict[str, Any] = {"fillOpacity": 10, "showPoints": "never"}
        if spec.threshold_lines:
            custom["thresholdsStyle"] = {"mode": "dashed"}
        if spec.stack:
            custom["stacking"] = {"mode": "normal"}
        defaults["custom"] = custom
    elif spec.kind == "stat":
        panel["options"] = dict(_STAT_OPTIONS)
    else:
        panel["options"] = _heatmap_options(spec.unit)
    if spec.min is not None:
        defaults["min"] = spec.min
    if spec.max is not None:
        defaults["max"] = spec.max
    if spec.steps:
        defaults["thresholds"] = _thresholds(spec.steps)
    return panel


def _variable(var: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {
        "allowCustomValue": True,
        "auto": False,
        "auto_count": 30,
        "auto_min": "10s",
        "datasource": dict(DATASOURCE),
        "includeAll": var.multi,
        "label": var.label,
        "multi": var.multi,
        "name": var.name,
        "query": var.query,
        "refresh": _REFRESH_ON_TIME_RANGE_CHANGE,
        "skipUrlSync": False,
        "sort": _SORT_ALPHABETICAL_ASC,
        "type": "query",
    }
    if var.multi:
        out["allValue"] = ".*"
    return out


def _datasource_variable() -> dict[str, Any]:
    return {
        "allowCustomValue": True,
        "auto": False,
        "auto_count": 30,
        "auto_min": "10s",
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "query": "prometheus",
        "skipUrlSync": False,
        "type": "datasource",
    }


def _link(title: str, **fields: Any) -> dict[str, Any]:
    link: dict[str, Any] = {
        "asDropdown": False,
        "icon": "",
        "includeVars": False,
        "keepTime": False,
        "tags": [],
        "targetBlank": False,
        "title": title,
        "tooltip": "",
    }
    link.update(fields)
    return link


def _layout(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows full width; their panels left to right, wrapping at the grid's width."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        grid = {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}
        panels.append(
            {"collapsed": False, "gridPos": grid, "panels": [], "title": row.title, "type": "row"}
        )
        y += 1
        x, line_height = 0, 0
        for spec in row.panels:
            if x + spec.width > GRID_WIDTH:
                y, x, line_height = y + line_height, 0, 0
            panels.append(_panel(spec, {"h": spec.height, "w": spec.width, "x": x, "y": y}))
            x += spec.width
            line_height = max(line_height, spec.height)
        y += line_height
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return panels


def build(spec: Dashboard) -> dict[str, Any]:
    links = [
        _link(
            "streamobs",
            type="dashboards",
            tags=list(spec.tags),
            asDropdown=True,
            includeVars=True,
            keepTime=True,
        )
    ]
    links += [_link(title, type="link", url=url, targetBlank=True) for title, url in spec.links]
    return {
        # A null id makes every Grafana create the dashboard instead of overwriting another
        # one that happens to have that database id; the uid is what stays stable.
        "id": None,
        "annotations": {},
        "description": spec.description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": _CROSSHAIR,
        "links": links,
        "panels": _layout(spec.rows),
        "refresh": spec.refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(spec.tags),
        "templating": {"list": [_datasource_variable(), *map(_variable, spec.variables)]},
        "time": {"from": spec.time_from, "to": "now"},
        "timezone": "browser",
        "title": spec.title,
        "uid": spec.uid,
    }


def render(spec: Dashboard) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
