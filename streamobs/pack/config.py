"""Everything the pack's rules and dashboards are tuned by, in one place.

The SLOs are not set here: they are streamobs' own, the ``slo:`` of each target in the
daemon's config (:mod:`streamobs.config`), read by ``streamobs pack --config`` and grouped
into :class:`Objectives`; without a config the pack is written for the daemon's default
SLO, applied to every target. Everything else (which job is streamobs, the burn-rate
windows, the other alerts' thresholds, the dashboards' settings) can be tuned with a YAML
file of options (``--options``), read by the config's own strict reader: unknown keys are
errors and durations are the config's (``90s``, ``1h30m``, ``1.5h``).

The SLOs follow the SRE Workbook's multi-window, multi-burn-rate alerts: an alert fires
when the error budget burns ``factor`` times faster than the objective allows over both a
long window (is it significant?) and a short one (is it still happening?). A factor of
14.4 over 1h spends 2% of a 30-day budget (2.1% of a 28-day one) in that hour.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streamobs.config import Config, ConfigError, Section, parse_config, parse_duration
from streamobs.labels import model_label

Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")
# Durations in rules: from 0 (``for: 0s``) to a year.
MAX_DURATION = 366 * 86400.0


@dataclass(frozen=True)
class BurnWindow:
    """One long/short window pair: fire when both error ratios exceed factor x budget."""

    long: str
    short: str
    factor: float
    severity: Severity
    for_: str


@dataclass(frozen=True)
class Objectives:
    """The SLOs of some targets, as streamobs is configured with them (``slo:``).

    ``objective`` holds for the TTFT, TPOT and availability SLOs alike; ``targets`` empty
    means every target (the pack written without a config). A target some of whose models
    have an SLO of their own is judged by model: one set for those models (``models``,
    their labels), one for its other models (``excluded_models`` names those judged apart);
    either is for one target.
    """

    targets: tuple[str, ...]
    ttft_seconds: float
    tpot_seconds: float
    objective: float
    models: tuple[str, ...] = ()
    excluded_models: tuple[str, ...] = ()

    @property
    def per_model(self) -> bool:
        """Whether these objectives are for some of one target's models, not all of them."""
        return bool(self.models or self.excluded_models)


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


class _SLO(Protocol):
    @property
    def ttft_seconds(self) -> float: ...
    @property
    def tpot_seconds(self) -> float: ...
    @property
    def objective(self) -> float: ...


def objectives_of(slo: _SLO, targets: tuple[str, ...] = ()) -> Objectives:
    return Objectives(targets, slo.ttft_seconds, slo.tpot_seconds, slo.objective)


def _default_slo() -> _SLO:
    """streamobs' default SLO: that of a target configured with nothing but its URL."""
    config = parse_config({"targets": [{"name": "default", "url": "http://127.0.0.1"}]})
    return config.targets[0].slo


# The daemon's default SLO, for every target.
DEFAULT_OBJECTIVES: tuple[Objectives, ...] = (objectives_of(_default_slo()),)


@dataclass(frozen=True)
class PackConfig:
    # Which scrape job(s) are streamobs; every rule reads only series matching this.
    selector: str = 'job="streamobs"'
    # SLO error ratios are aggregated over everything but these labels, so several
    # streamobs replicas probing one target count as one SLI.
    slo_labels: tuple[str, ...] = ("job", "target")
    slo_period: str = "28d"
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
    # An engine's /metrics unreachable while every probe fails.
    engine_down: AlertSettings = AlertSettings("critical", "5m")
    # Requests waiting, and still growing over the window.
    engine_queue_growing: AlertSettings = AlertSettings("warning", "15m", 10.0, "15m")
    engine_kv_cache_near_full: AlertSettings = AlertSettings("warning", "15m", 0.95)
    # Preempted requests within the window.
    engine_preemptions: AlertSettings = AlertSettings("warning", "5m", 10.0, "15m")
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

    # From streamobs' config, not from the options: see objectives_from().
    objectives: tuple[Objectives, ...] = DEFAULT_OBJECTIVES
    # The config file the objectives were read from (for the files' headers).
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("at least one set of objectives is required")
        seen: set[str] = set()
        for objectives in self.objectives:
            if not 0 < objectives.objective < 1:
                raise ValueError(f"objective must be between 0 and 1, got {objectives.objective}")
            if objectives.ttft_seconds <= 0 or objectives.tpot_seconds <= 0:
                raise ValueError("SLO thresholds must be positive")
            if not objectives.targets and len(self.objectives) > 1:
                raise ValueError("objectives for every target exclude any others")
            if objectives.per_model:
                continue
            if seen & set(objectives.targets):
                raise ValueError(f"target(s) {sorted(seen & set(objectives.targets))} twice")
            seen.update(objectives.targets)
        _check_models(self.objectives, seen)
        for window in self.burn_windows:
            if window.severity not in SEVERITIES:
                raise ValueError(f"burn window severity {window.severity!r} is not one of "
                                 f"{', '.join(SEVERITIES)}")  # fmt: skip
        if not self.burn_windows:
            raise ValueError("burn_windows: at least one window pair is required")
        if not self.slo_labels:
            raise ValueError("slo_labels must name at least one label")
        if not all(0 < q < 1 for q in self.quantiles):
            raise ValueError("quantiles must be between 0 and 1")

    @property
    def slo_windows(self) -> tuple[str, ...]:
        """Every window an error ratio is recorded for, shortest first."""
        windows = {w for pair in self.burn_windows for w in (pair.long, pair.short)}
        return tuple(sorted(windows, key=duration_seconds))

    @property
    def per_model(self) -> bool:
        """Whether some target's models are judged apart (the rules then keep ``model``)."""
        return any(o.per_model for o in self.objectives)


def _check_models(objectives: Iterable[Objectives], whole: set[str]) -> None:
    """Each model of a target judged by model falls under exactly one set of objectives:
    its own, or the target's other models'; such a target is judged whole nowhere."""
    judged: dict[str, set[str]] = {}  # target -> models with objectives of their own
    others: dict[str, set[str]] = {}  # target -> the models its other models' exclude
    for item in (o for o in objectives if o.per_model):
        if item.models and item.excluded_models:
            raise ValueError("objectives are for some models or for all but some, not both")
        if len(item.targets) != 1:
            raise ValueError("objectives by model are for one target")
        (target,) = item.targets
        if target in whole:
            raise ValueError(f"target {target!r} judged whole and by model")
        if item.excluded_models:
            if target in others:
                raise ValueError(f"target {target!r}: other models' objectives twice")
            others[target] = set(item.excluded_models)
            continue
        models = judged.setdefault(target, set())
        twice = models & set(item.models)
        if twice:
            raise ValueError(f"target {target!r}: model(s) {sorted(twice)} twice")
        models.update(item.models)
    for target, excluded in others.items():
        if excluded != judged.get(target, set()):
            raise ValueError(
                f"target {target!r}: its other models' objectives must exclude exactly the "
                "models with objectives of their own"
            )


DEFAULT = PackConfig()


def duration_seconds(text: str) -> float:
    """Seconds in one of the pack's durations (the daemon config's grammar)."""
    return parse_duration(text, "duration", allow_zero=True, maximum=MAX_DURATION)


def prometheus_duration(seconds: float, path: str = "duration") -> str:
    """``5400`` as Prometheus writes it, ``1h30m``; whole milliseconds only."""
    millis = round(seconds * 1000)
    if not math.isclose(millis, seconds * 1000, abs_tol=1e-6):
        raise ConfigError(f"{path}: Prometheus durations are whole milliseconds")
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def _settings(slo: _SLO) -> tuple[float, float, float]:
    return slo.ttft_seconds, slo.tpot_seconds, slo.objective


def objectives_from(config: Config) -> tuple[Objectives, ...]:
    """streamobs' targets grouped by their SLO, in the order the config names them. A
    target with models whose SLO differs from its own is judged by model: those models
    grouped by their SLO, and its other models (if any) by the target's."""
    found: list[Objectives] = []
    whole: dict[tuple[float, float, float], int] = {}  # an SLO -> its targets in found
    for target in config.targets:
        own = target.model_slos()
        if not own:
            key = _settings(target.slo)
            if key in whole:
                item = found[whole[key]]
                found[whole[key]] = dataclasses.replace(item, targets=(*item.targets, target.name))
            else:
                whole[key] = len(found)
                found.append(Objectives((target.name,), *key))
            continue
        labels = tuple(model_label(model) for model, _ in own)
        if len(own) < len(target.models):  # some listed models are judged by the target's
            found.append(Objectives((target.name,), *_settings(target.slo), excluded_models=labels))
        by_slo: dict[tuple[float, float, float], list[str]] = {}
        for model, slo in own:
            by_slo.setdefault(_settings(slo), []).append(model_label(model))
        found += [Objectives((target.name,), *k, models=tuple(m)) for k, m in by_slo.items()]
    return tuple(found)


def for_daemon_config(
    config: Config, options: PackConfig = DEFAULT, source: str | None = None
) -> PackConfig:
    """``options`` with the targets and SLOs of streamobs' ``config``."""
    return dataclasses.replace(options, objectives=objectives_from(config), source=source)


# -- options ---------------------------------------------------------------------------

# Settings that are streamobs' own and have moved to its config.
_SLO_KEYS = ("ttft", "tpot", "availability", "objectives")
_DURATIONS = {"slo_period", "long", "short", "for_", "window", "dashboard_refresh"}
_FROM_CONFIG = {"objectives", "source"}


def parse_options(data: object, base: PackConfig = DEFAULT) -> PackConfig:
    """``base`` with the options of a parsed YAML mapping; ConfigError names the key."""
    section = Section(data, "")
    for key in _SLO_KEYS:
        if section.has(key):
            raise ConfigError(
                f"{key}: the SLOs are streamobs' own: set slo: of each target in its "
                "config and pass that with --config"
            )
    try:
        options: PackConfig = _read(section, base, _FROM_CONFIG)
    except ConfigError:
        raise
    except ValueError as exc:  # the checks of the whole, in PackConfig.__post_init__
        raise ConfigError(str(exc)) from None
    return options


def _key(name: str) -> str:
    # ``for`` is a keyword in Python, so the field is ``for_``.
    return "for" if name == "for_" else name


def _read(section: Section, current: Any, skip: Iterable[str] = ()) -> Any:
    changes = {}
    for field in dataclasses.fields(current):
        if field.name in skip or not section.has(_key(field.name)):
            continue
        changes[field.name] = _value(section, field.name, getattr(current, field.name))
    section.done()
    return dataclasses.replace(current, **changes)


def _build(section: Section, kind: type[Any]) -> Any:
    missing = [_key(f.name) for f in dataclasses.fields(kind) if not section.has(_key(f.name))]
    if missing:
        raise ConfigError(f"{section.at(missing[0])}: required")
    values = {f.name: _value(section, f.name, _EXAMPLES[kind][f.name]) for f in
              dataclasses.fields(kind)}  # fmt: skip
    section.done()
    return kind(**values)


def _value(section: Section, name: str, current: Any) -> Any:
    key = _key(name)
    path = section.at(key)
    if dataclasses.is_dataclass(current):
        return _read(section.section(key), current)
    if name in _DURATIONS:
        text = section.raw(key)
        seconds = parse_duration(text, path, allow_zero=name == "for_", maximum=MAX_DURATION)
        return prometheus_duration(seconds, path)
    if name == "severity":
        severity = section.text(key)
        if severity not in SEVERITIES:
            raise ConfigError(f"{path}: one of {', '.join(SEVERITIES)}, got {severity!r}")
        return severity
    if isinstance(current, tuple):
        raw = section.raw(key)
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{path}: expected a non-empty list")
        if name == "burn_windows":
            return tuple(
                _build(Section(item, f"{path}[{i}]"), BurnWindow) for i, item in enumerate(raw)
            )
        kind = type(current[0])
        items = []
        for i, item in enumerate(raw):
            if kind is str and not (isinstance(item, str) and item):
                raise ConfigError(f"{path}[{i}]: expected a string")
            if kind is float and (isinstance(item, bool) or not isinstance(item, int | float)):
                raise ConfigError(f"{path}[{i}]: expected a number")
            items.append(kind(item))
        return tuple(items)
    if isinstance(current, str):
        text = section.text(key)
        if not text:
            raise ConfigError(f"{path}: expected a non-empty string")
        return text
    if name == "factor":
        return section.number(key, 1.0, 0.0, 1e6)
    return section.number(key, 0.0, -1e12, 1e12)


# The type of each field, by an instance, for items built from nothing (list entries).
_EXAMPLES: dict[type[Any], dict[str, Any]] = {
    BurnWindow: dataclasses.asdict(WORKBOOK_BURN_WINDOWS[0]),
}


__all__ = [
    "DEFAULT",
    "DEFAULT_OBJECTIVES",
    "SEVERITIES",
    "AlertSettings",
    "BurnWindow",
    "Objectives",
    "PackConfig",
    "Severity",
    "duration_seconds",
    "for_daemon_config",
    "objectives_from",
    "objectives_of",
    "parse_options",
    "prometheus_duration",
]
