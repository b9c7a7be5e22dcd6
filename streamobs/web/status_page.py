"""The small HTML status page at ``/``: recent probes per target, last error, SLI."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from streamobs.report import ms
from streamobs.status import TargetStatus
from streamobs.targets import UNKNOWN_MODEL

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "th{background:#f4f4f4}.bad{color:#b00}.ok{color:#070}"
)


def _row(status: TargetStatus) -> str:
    t = status.target
    sli = "-" if status.sli is None else f"{status.sli:.1%}"
    cells = [
        html.escape(t.name),
        html.escape(t.target.request_url),
        html.escape(_model(status)),
        f"{status.slo.ttft_seconds:g} s @ {status.slo.objective:.2%}",
        sli,
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _model(status: TargetStatus) -> str:
    """The configured model, the listed one, or the one the last probe discovered."""
    if status.model is not None:
        if status.target.models:
            return status.model
        return "(not listed yet)" if status.model == UNKNOWN_MODEL else f"{status.model} (listed)"
    if status.recent and status.recent[0].model != UNKNOWN_MODEL:
        return f"{status.recent[0].model} (discovered)"
    return "(not discovered yet)"


def _recent(status: TargetStatus) -> str:
    rows = []
    for r in status.recent:
        klass = "ok" if r.ok else "bad"
        when = time.strftime("%H:%M:%S", time.localtime(r.started_at))
        buffered = "yes" if r.delivery is not None and r.delivery.buffered else "no"
        timing = "exact" if r.timing.degraded is None else r.timing.degraded.value
        rows.append(
            f"<tr><td>{when}</td><td class={klass}>{html.escape(r.outcome.value)}</td>"
            f"<td>{ms(r.first_token_ns)}</td><td>{ms(r.tpot_ns)}</td><td>{ms(r.done_ns)}</td>"
            f"<td>{r.output_tokens if r.output_tokens is not None else '-'}</td>"
            f"<td>{buffered}</td><td>{html.escape(timing)}</td></tr>"
        )
    head = (
        "<tr><th>started</th><th>outcome</th><th>TTFT</th><th>TPOT</th><th>e2e</th>"
        "<th>tokens</th><th>buffered</th><th>timing</th></tr>"
    )
    last = status.last_error
    error = (
        f"<p>Last failure: <b>{html.escape(last.outcome.value)}</b> at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last.started_at))}: "
        f"{html.escape(last.error or '')}</p>"
        if last is not None
        else "<p>No failures seen.</p>"
    )
    title = status.target.name + (f" · {status.model}" if status.model is not None else "")
    return f"<h2>{html.escape(title)}</h2>{error}<table>{head}{''.join(rows)}</table>"


def render_status_page(statuses: Sequence[TargetStatus], reload_ok: bool) -> str:
    summary_head = (
        "<tr><th>target</th><th>URL</th><th>model</th><th>TTFT SLO</th>"
        "<th>SLI (recent probes)</th></tr>"
    )
    reload_note = "" if reload_ok else "<p class=bad>The last configuration reload FAILED.</p>"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>streamobs</title>"
        f"<style>{_STYLE}</style></head><body><h1>streamobs</h1>{reload_note}"
        f"<table>{summary_head}{''.join(_row(s) for s in statuses)}</table>"
        f"{''.join(_recent(s) for s in statuses)}"
        "<p><a href=/metrics>/metrics</a> · <a href=/healthz>/healthz</a> · "
        "<a href=/readyz>/readyz</a></p></body></html>"
    )
