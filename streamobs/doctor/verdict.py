"""What a check concludes: a verdict, the numbers behind it, and the fix when it is not fine."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class Verdict(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


# Which verdict wins when one check combines several findings.
_SEVERITY = {
    Verdict.SKIPPED: 0,
    Verdict.PASS: 1,
    Verdict.WARN: 2,
    Verdict.INCONCLUSIVE: 3,
    Verdict.FAIL: 4,
}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=_SEVERITY.__getitem__, default=Verdict.PASS)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``summary`` is one line; ``details`` are human lines carrying the numbers;
    ``evidence`` holds the same numbers for ``--json`` (seconds, counts, ratios)."""

    name: str
    verdict: Verdict
    summary: str
    details: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    fix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))
        object.__setattr__(self, "details", tuple(self.details))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "details": list(self.details),
            "evidence": dict(self.evidence),
            "fix": self.fix,
        }


def skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, Verdict.SKIPPED, why)


def inconclusive(name: str, why: str, **evidence: Any) -> CheckResult:
    return CheckResult(name, Verdict.INCONCLUSIVE, why, evidence=evidence)
