"""The doctor's report for humans (one block per check) and as one JSON document."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from streamobs.doctor.runner import Report
from streamobs.doctor.verdict import CheckResult, Verdict

_INDENT = " " * 14


def format_check(check: CheckResult) -> str:
    lines = [f"{check.verdict.value.upper():<13} {check.name:<12} {check.summary}"]
    lines += [_INDENT + line for line in check.details]
    if check.fix and check.verdict is not Verdict.PASS:
        lines.append(_INDENT + "fix: " + check.fix)
    return "\n".join(lines)


def header(report: Report) -> str:
    lines = [f"streamobs doctor {report.url}" + (f"  model {report.model}" if report.model else "")]
    if report.direct:
        lines.append(f"  direct  {report.direct}")
    lines.append(f"  metrics {report.metrics_url}")
    return "\n".join(lines)


def footer(report: Report) -> str:
    if report.error:
        return f"cannot run the checks: {report.error}"
    counts = Counter(check.verdict for check in report.checks)
    parts = [f"{counts[v]} {v.value}" for v in Verdict if counts[v]]
    return f"{len(report.checks)} checks: {', '.join(parts)} ({report.seconds:.1f} s)"


def render_text(report: Report) -> str:
    blocks = [header(report), *(format_check(check) for check in report.checks), footer(report)]
    return "\n\n".join(blocks)


def to_dict(report: Report) -> dict[str, Any]:
    return {
        "url": report.url,
        "direct": report.direct,
        "metrics_url": report.metrics_url,
        "model": report.model,
        "error": report.error,
        "seconds": report.seconds,
        "exit_code": report.exit_code,
        "verdicts": {check.name: check.verdict.value for check in report.checks},
        "checks": [check.to_dict() for check in report.checks],
    }


def render_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2)
