"""Dashboard lint: what makes a dashboard import cleanly into any Grafana and stay usable.

The rules follow the monitoring-mixin dashboard linter: a ``datasource`` variable used by
every panel and query (file provisioning ignores ``__inputs``), stable uids and a null id,
a unit and a description on every panel, ``$__rate_interval`` in every rate, and
job/target/model variables that the queries actually filter on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from streamobs.pack.config import DEFAULT
from tests.pack_helpers import (
    dashboards,
    data_panels,
    panels,
    parse_label_values,
    queries,
    query_variables,
    variables_used,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Stable: links, bookmarks and provisioning refer to these; renaming one breaks them.
UIDS = {
    "streamobs-slo.json": "streamobs-slo",
    "streamobs-probes.json": "streamobs-probes",
    "streamobs-engines.json": "streamobs-engines",
    "streamobs-gpu.json": "streamobs-gpu",
}
ALL = sorted(dashboards().items())
IDS = [name for name, _ in ALL]
_RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|deriv)\(([^()]*)\[([^\]]+)\]")


def test_the_four_dashboards_exist_with_stable_uids() -> None:
    assert {name: d["uid"] for name, d in ALL} == UIDS
    for _, dashboard in ALL:
        assert len(dashboard["uid"]) <= 40  # Grafana's limit


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=IDS)
def test_imports_anywhere(name: str, dashboard: dict[str, Any]) -> None:
    assert "id" in dashboard and dashboard["id"] is None
    assert dashboard["title"].startswith("streamobs / ")
    assert dashboard.get("description")
    assert set(DEFAULT.dashboard_tags) <= set(dashboard["tags"])
    assert isinstance(dashboard["schemaVersion"], int)
    text = json.dumps(dashboard)
    # No import-time placeholders: provisioning would leave them unresolved.
    assert "__inputs" not in dashboard and "${DS_" not in text
    assert any(link.get("url") == DEFAULT.runbook_url for link in dashboard["links"])


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=IDS)
def test_datasource_variable_is_used_by_every_panel_query_and_variable(
    name: str, dashboard: dict[str, Any]
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for variable in query_variables(dashboard):
        assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=IDS)
def test_every_panel_has_a_unit_a_description_and_a_place(
    name: str, dashboard: dict[str, Any]
) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    titles = [p["title"] for p in data_panels(dashboard)]
    assert len(titles) == len(set(titles)), "duplicate panel titles"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["description"].strip(), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        if panel["type"] == "heatmap":
            # Prometheus buckets are already a distribution: no re-bucketing.
            assert panel["options"]["calculate"] is False
            assert all(t["format"] == "heatmap" for t in panel["targets"])


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=IDS)
def test_job_target_and_model_variables_exist_and_every_variable_is_used(
    name: str, dashboard: dict[str, Any]
) -> None:
    variables = {v["name"]: v for v in query_variables(dashboard)}
    assert {"job", "target", "model"} <= set(variables)
    for variable in variables.values():
        parse_label_values(variable["query"])  # a query Grafana's Prometheus source runs
        if variable.get("multi"):
            assert variable["includeAll"] and variable["allValue"] == ".*"
    used: set[str] = set()
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            used |= variables_used(target["expr"])
    for variable in variables.values():
        used |= variables_used(variable["query"])
    assert set(variables) <= used, f"unused variables: {set(variables) - used}"


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=IDS)
def test_repeated_panels_repeat_over_a_multi_value_variable_and_say_which(
    name: str, dashboard: dict[str, Any]
) -> None:
    variables = {v["name"]: v for v in query_variables(dashboard)}
    for panel in data_panels(dashboard):
        repeat = panel.get("repeat")
        if repeat is None:
            continue
        assert variables[repeat]["multi"], panel["title"]
        assert f"${repeat}" in panel["title"], panel["title"]  # which copy is which
        assert panel["repeatDirection"] == "h" and panel["gridPos"]["w"] == 24


def test_the_probes_dashboard_shows_where_the_ttft_goes_per_target() -> None:
    probes = dict(ALL)["streamobs-probes.json"]
    (panel,) = [p for p in data_panels(probes) if p["title"].startswith("Where the time")]
    assert panel["repeat"] == "target"
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    exprs = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert list(exprs) == ["{{phase}}", "path", "queue", "prefill", "server, other"]
    text = "\n".join(exprs.values())
    for series in (
        "streamobs_probe_connection_seconds",
        "streamobs_probe_path_seconds",
        "streamobs_probe_server_queue_seconds",
        "streamobs_probe_server_prefill_seconds",
        "streamobs_probe_server_ttft_seconds",
    ):  # means: rate of _sum over rate of _count, never a quantile
        assert f"rate({series}_sum" in text and f"rate({series}_count" in text
    assert "histogram_quantile" not in text
    assert "traces_receiver" in panel["description"]
    assert "--otlp-traces-endpoint" in panel["description"]


@pytest.mark.parametrize("query", queries(), ids=str)
def test_every_query_filters_on_job_and_rates_use_rate_interval(query: Any) -> None:
    assert 'job=~"$job"' in query.expr
    for function, _, window in _RANGE_FUNCTION.findall(query.expr):
        assert window == "$__rate_interval", f"{function}() over [{window}]"
    # Fixed windows only where the SLO period is meant, over recorded series.
    for window in re.findall(r"\[([^\]]+)\]", query.expr):
        assert window in ("$__rate_interval", DEFAULT.slo_period), window


def test_slo_panels_use_the_configured_objective_and_windows() -> None:
    slo = dict(ALL)["streamobs-slo.json"]
    exprs = "\n".join(t["expr"] for p in data_panels(slo) for t in p.get("targets", []))
    for window in DEFAULT.slo_windows:
        assert f"job_target:streamobs_slo_errors:ratio_rate{window}" in exprs
    assert "/ 0.01" in exprs  # the 99% objective's budget
    burn = next(p for p in data_panels(slo) if p["title"] == "TTFT burn rate")
    steps = [s["value"] for s in burn["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 1.0, 3.0, 6.0, 14.4]
