"""A small declarative layer over the Grafana Foundation SDK.

Dashboards in ``dashboards.py`` are lists of rows of :class:`Panel` specs; this module
turns them into dashboard JSON that imports into any Grafana, file provisioning included:
a ``datasource`` variable that every panel and query uses (``__inputs`` alone is ignored
by provisioning), a stable ``uid``, ``id: null``, sequential panel ids, and a unit and a
description on every panel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as _common
from grafana_foundation_sdk.models import dashboard as _dashboard_models
from grafana_foundation_sdk.models import heatmap as _heatmap_models
from grafana_foundation_sdk.models import prometheus as _prometheus_models

# The SDK's enums derive from enum.StrEnum and its builders return typing.Self, both new
# in Python 3.11; type-checked for 3.10 they would not match, so the models are untyped.
common: Any = _common
models: Any = _dashboard_models
heatmap_models: Any = _heatmap_models
prometheus_models: Any = _prometheus_models

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")


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


def _query(query: Query, ref_id: str, heatmap_format: bool) -> Any:
    q = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )
    if heatmap_format:
        q = q.format(prometheus_models.PromQueryFormat.HEATMAP)
    return q.instant() if query.instant else q.range()


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> Any:
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=colour) for value, colour in steps])
    )


def _panel(spec: Panel) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = timeseries.Panel().fill_opacity(10).show_points(common.VisibilityMode.NEVER)
        if spec.threshold_lines:
            builder = builder.thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphThresholdsStyleMode.DASHED
                )
            )
        if spec.stack:
            builder = builder.stacking(
                common_builders.StackingConfig().mode(common.StackingMode.NORMAL)
            )
    elif spec.kind == "stat":
        builder = stat.Panel().graph_mode(common.BigValueGraphMode.NONE)
    else:
        builder = (
            heatmap.Panel()
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit(spec.unit))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(heatmap_models.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
            )
        )
    builder = (
        builder.title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    if spec.steps:
        builder = builder.thresholds(_thresholds(spec.steps))
    for index, query in enumerate(spec.queries):
        builder = builder.with_target(_query(query, chr(ord("A") + index), spec.kind == "heatmap"))
    return builder


def _variables(spec: Dashboard) -> list[Any]:
    variables: list[Any] = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    ]
    for var in spec.variables:
        v = (
            dash.QueryVariable(var.name)
            .label(var.label)
            .datasource(DATASOURCE)
            .query(var.query)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
        )
        if var.multi:
            v = v.multi(True).include_all(True).all_value(".*")
        variables.append(v)
    return variables


def build(spec: Dashboard) -> dict[str, Any]:
    builder = (
        dash.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .refresh(spec.refresh)
        .time(spec.time_from, "now")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .link(
            dash.DashboardLink("streamobs")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(list(spec.tags))
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for title, url in spec.links:
        builder = builder.link(
            dash.DashboardLink(title)
            .type(models.DashboardLinkType.LINK)
            .url(url)
            .target_blank(True)
        )
    for variable in _variables(spec):
        builder = builder.with_variable(variable)
    for row in spec.rows:
        builder = builder.with_row(dash.Row(row.title))
        for panel in row.panels:
            builder = builder.with_panel(_panel(panel))
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # A null id makes every Grafana create the dashboard instead of overwriting another
    # one that happens to have that database id; the uid is what stays stable.
    data = {"id": None, **data}
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = number
    return data


def render(spec: Dashboard) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
