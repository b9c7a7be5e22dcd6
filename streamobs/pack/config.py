"""Everything the pack's rules and dashboards are tuned by, in one place.

Change a value here (or pass a YAML file of overrides to ``python -m streamobs.pack
--config``) and regenerate: the alert, its promtool test expectations and the dashboard
panels that draw the same threshold all follow. Durations are Prometheus durations.

The SLOs follow the SRE Workbook's multi-window, multi-burn-rate alerts: an alert fires
when the error budget burns ``factor`` times faster than the objective allows over both a
long window (is it significant?) and a short one (is it still happening?). A factor of
14.4 over 1h spends 2% of a 30-day budget (2.1% of a 28-day one) in that hour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


@dataclass(frozen=True)
class BurnWindow:
    """One long/short window pair: fire when both error ratios exceed factor x budget."""

    long: str
    short: str
    factor: float
    severity: Severity
    for_: str


@dataclass(frozen=True)
class LatencyObjective:
    """``objective`` of probes must see the latency at or under ``threshold_seconds``."""

    threshold_seconds: float
    objective: float


@dataclass(frozen=True)
class AvailabilityObjective:
    """``objective`` of probes must end with outcome ``ok``."""

    objective: float


@dataclass(frozen=True)
class AlertSettings:
    """How one non-SLO alert fires: the value it compares against, over which range,
    for how long the condition must hold, and who is told."""

    severity: Severity
    for_: str
    threshold: float = 0.0
    window: str = "5m"


# SRE Workbook, "Alerting on SLOs", recommended parameters: two page pairs, two ticket pairs.
# The ``for`` durations damp flapping at the edges of the short windows.
WORKBOOK_BURN_WINDOWS: tuple[BurnWindow, ...] = (
    BurnWindow("1h", "5m", 14.4, "critical", "2m"),
    BurnWindow("6h", "30m", 6.0, "critical", "15m"),
    BurnWindow("1d", "2h", 3.0, "warning", "1h"),
    BurnWindow("3d", "6h", 1.0, "warning", "3h"),
)

# Clock-event reasons that mean the GPU is slowed against the workload's will; idle,
# application clocks and the software power cap are normal under a steady load.
GPU_THROTTLE_REASONS: tuple[str, ...] = (
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)


@dataclass(frozen=True)
class PackConfig:
    # Which scrape job(s) are streamobs; every rule reads only series matching this.
    selector: str = 'job="streamobs"'
    # SLO error ratios are aggregated over everything but these labels, so several
    # streamobs replicas probing one target count as one SLI.
    slo_labels: tuple[str, ...] = ("job", "target")
    slo_period: str = "28d"
    ttft: LatencyObjective = LatencyObjective(threshold_seconds=2.0, objective=0.99)
    tpot: LatencyObjective = LatencyObjective(threshold_seconds=0.1, objective=0.99)
    availability: AvailabilityObjective = AvailabilityObjective(objective=0.99)
    burn_windows: tuple[BurnWindow, ...] = WORKBOOK_BURN_WINDOWS

    # Blind SLOs page: without probe results the SLO alerts above cannot fire.
    probes_absent: AlertSettings = AlertSettings("critical", "5m", window="10m")
    streamobs_down: AlertSettings = AlertSettings("warning", "5m")
    # Share of probes whose tokens arrived in bursts.
    stream_buffered: AlertSettings = AlertSettings("warning", "15m", 0.5, "15m")
    # Share of probes whose own stamps streamobs could not vouch for.
    probe_timing_degraded: AlertSettings = AlertSettings("warning", "15m", 0.2, "15m")
    threshold_not_bucket_edge: AlertSettings = AlertSettings("warning", "15m")
    slo_config_mismatch: AlertSettings = AlertSettings("warning", "15m")
    # vLLM's /metrics unreachable while every probe fails.
    vllm_down: AlertSettings = AlertSettings("critical", "5m")
    # Requests waiting, and still growing over the window.
    vllm_queue_growing: AlertSettings = AlertSettings("warning", "15m", 10.0, "15m")
    vllm_kv_cache_near_full: AlertSettings = AlertSettings("warning", "15m", 0.95)
    # Preempted requests within the window.
    vllm_preemptions: AlertSettings = AlertSettings("warning", "5m", 10.0, "15m")
    gpu_hot: AlertSettings = AlertSettings("warning", "10m", 85.0)
    gpu_throttled: AlertSettings = AlertSettings("warning", "15m")
    gpu_throttle_reasons: tuple[str, ...] = GPU_THROTTLE_REASONS
    # Uncorrected ECC errors within the window.
    gpu_ecc_errors: AlertSettings = AlertSettings("warning", "0s", 0.0, "1h")
    # NVML answered within the window and does not now.
    gpu_lost: AlertSettings = AlertSettings("critical", "1m", window="1h")
    collector_failing: AlertSettings = AlertSettings("warning", "15m")
    otlp_export_failing: AlertSettings = AlertSettings("warning", "15m", window="10m")
    config_reload_failed: AlertSettings = AlertSettings("warning", "10m")

    runbook_url: str = "https://github.com/streamobs/streamobs/blob/main/docs/runbooks.md"

    # Dashboards.
    dashboard_tags: tuple[str, ...] = ("streamobs",)
    dashboard_uid_prefix: str = "streamobs-"
    dashboard_refresh: str = "30s"
    dashboard_time_from: str = "now-6h"
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)

    def __post_init__(self) -> None:
        for name, objective in (
            ("ttft", self.ttft.objective),
            ("tpot", self.tpot.objective),
            ("availability", self.availability.objective),
        ):
            if not 0 < objective < 1:
                raise ValueError(f"{name}.objective must be between 0 and 1, got {objective}")
        for name in ("ttft", "tpot"):
            objective_ = getattr(self, name)
            if objective_.threshold_seconds <= 0:
                raise ValueError(f"{name}.threshold_seconds must be positive")
        for window in self.burn_windows:
            if window.severity not in SEVERITIES:
                raise ValueError(f"burn window severity {window.severity!r} is not one of "
                                 f"{', '.join(SEVERITIES)}")  # fmt: skip
        if not self.slo_labels:
            raise ValueError("slo_labels must name at least one label")

    @property
    def slo_windows(self) -> tuple[str, ...]:
        """Every window an error ratio is recorded for, shortest first."""
        windows = {w for pair in self.burn_windows for w in (pair.long, pair.short)}
        return tuple(sorted(windows, key=duration_seconds))


DEFAULT = PackConfig()


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as ``1h30m``; ValueError if it is not one."""
    total, number, pos = 0.0, "", 0
    while pos < len(text):
        char = text[pos]
        if char.isdigit():
            number += char
            pos += 1
            continue
        unit = "ms" if text.startswith("ms", pos) else char
        if not number or unit not in _UNITS:
            raise ValueError(f"not a Prometheus duration: {text!r}")
        total += int(number) * _UNITS[unit]
        number, pos = "", pos + len(unit)
    if number or not text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return total


def with_overrides(config: PackConfig, overrides: Mapping[str, Any]) -> PackConfig:
    """``config`` with values from a parsed YAML mapping; unknown keys are errors."""
    updated: PackConfig = _replace(config, overrides, "")
    return updated


def _replace(obj: Any, overrides: Mapping[str, Any], path: str) -> Any:
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{path or 'config'}: expected a mapping")
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        # ``for`` is a keyword in Python, so the field is ``for_``.
        name = "for_" if key == "for" else str(key)
        where = f"{path}.{key}" if path else str(key)
        if name not in known:
            raise ValueError(f"{where}: unknown key")
        changes[name] = _coerce(getattr(obj, name), value, where)
    return dataclasses.replace(obj, **changes)


def _coerce(current: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(current):
        return _replace(current, value, path)
    if isinstance(current, tuple):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list")
        if current and dataclasses.is_dataclass(current[0]):
            kind = type(current[0])
            return tuple(_build(kind, item, f"{path}[{i}]") for i, item in enumerate(value))
        return tuple(str(item) for item in value)
    if isinstance(current, bool) or not isinstance(current, int | float | str):
        raise ValueError(f"{path}: cannot be overridden")
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path}: expected a number")
    return float(value)


def _build(kind: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected a mapping")
    renamed = {("for_" if k == "for" else str(k)): v for k, v in value.items()}
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(renamed) - names)
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown key")
    try:
        return kind(**renamed)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


__all__ = [
    "DEFAULT",
    "SEVERITIES",
    "AlertSettings",
    "AvailabilityObjective",
    "BurnWindow",
    "LatencyObjective",
    "PackConfig",
    "Severity",
    "duration_seconds",
    "with_overrides",
]
