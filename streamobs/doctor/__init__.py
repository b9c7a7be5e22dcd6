"""``streamobs doctor``: diagnose the path between clients and a streaming LLM server.

Each check gives a verdict with its evidence and, when something is wrong, the fix.
"""

from streamobs.doctor.options import CHECKS, DoctorOptions
from streamobs.doctor.report import render_json, render_text
from streamobs.doctor.runner import Report, run_doctor
from streamobs.doctor.verdict import CheckResult, Verdict

__all__ = [
    "CHECKS",
    "CheckResult",
    "DoctorOptions",
    "Report",
    "Verdict",
    "render_json",
    "render_text",
    "run_doctor",
]
