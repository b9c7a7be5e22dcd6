"""The daemon's configuration: YAML, strictly validated, immutable once loaded.

Every error names the key's path (``targets[1].timeouts.first_token``) and what was wrong,
so ``streamobs check-config`` can be used in CI before a rollout.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from streamobs.collectors.engines.kinds import KIND_NAMES
from streamobs.collectors.engines.settings import EngineCollectorConfig
from streamobs.collectors.gpu.settings import GpuCollectorConfig
from streamobs.credential_hosts import CredentialHostError, HostPattern, parse_host_pattern
from streamobs.export.otlp.names import DEFAULT_PROVIDER
from streamobs.export.otlp.settings import OtlpSettings, OtlpSettingsError
from streamobs.export.prometheus.model_labels import model_label
from streamobs.files import KIB, MIB, FileRefused, read_limited
from streamobs.probe.spec import (
    DEFAULT_ACCEPT_ENCODING,
    DEFAULT_PROMPT,
    TargetError,
    Timeouts,
    parse_target,
)
from streamobs.secret import (
    BasicAuth,
    SecretError,
    is_credential_header,
    load_api_key,
    load_secret,
)
from streamobs.targets import (
    ALL_MODELS,
    DEFAULT_BUCKETS,
    SLO,
    EngineConfig,
    ModelConfig,
    TargetConfig,
    latency_buckets,
)
from streamobs.traces.settings import TracesReceiverSettings

DEFAULT_LISTEN = "127.0.0.1:9464"
MAX_HEADER_VALUE = 8 * KIB
# Bounds that keep every value far from overflowing a timer or a buffer.
MAX_CONFIG_BYTES = 4 * MIB  # a config for thousands of targets is a few hundred KiB
MAX_DURATION = 86400.0  # any duration: 1 day
MAX_TIMEOUT = 3600.0  # a probe phase or a scrape: 1 hour
MIN_DURATION = 0.001
MIN_INTERVAL = 0.1  # probing more often than this is a busy loop, not a measurement
MAX_COUNT = 1_000_000
MAX_TARGETS = 10_000
MAX_MODULES = 1_000
MAX_HEADERS = 64
MAX_MODELS = 1_000  # listed per target; max_models_per_target bounds them too
MAX_BUCKETS = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """One precise, human message about the first problem found."""


@dataclass(frozen=True, slots=True)
class Module:
    """Probe settings for ``/probe?module=NAME`` (its own, merged over target_defaults when
    used); its credentials (API key or basic auth, headers) go only to the hosts
    ``credential_hosts`` names."""

    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)
    credential_hosts: tuple[HostPattern, ...] = ()


def running_in_kubernetes() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[TargetConfig, ...]
    engines: tuple[EngineConfig, ...] = ()
    listen_address: str = DEFAULT_LISTEN
    web_config_file: str | None = None
    max_concurrency: int = 4
    max_models_per_target: int = 10  # distinct model label values per target
    shutdown_grace: float = 10.0
    buckets: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: DEFAULT_BUCKETS)
    engine_scrape: EngineCollectorConfig = field(default_factory=EngineCollectorConfig)
    gpu: GpuCollectorConfig = field(default_factory=GpuCollectorConfig)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    traces_receiver: TracesReceiverSettings = field(default_factory=TracesReceiverSettings)
    # Probe settings for /probe?target=URL&module=NAME, validated at load time; each
    # module's own settings are merged over target_defaults.
    modules: Mapping[str, Module] = field(default_factory=dict)
    target_defaults: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def module_target(self, module: str, url: str) -> TargetConfig:
        """A target for one blackbox-style probe, credentials included (the caller decides
        whether the host may have them); ConfigError for an unknown module or URL."""
        if module not in self.modules:
            raise ConfigError(f"unknown module {module[:64]!r}")
        settings = {**self.modules[module].settings, "name": "probe", "url": url}
        target = _target(Section(settings, f"modules.{module}"), self.target_defaults)
        return replace(target, engine=None)  # a one-off probe scrapes no engine

    def latency_buckets(self) -> dict[str, tuple[float, ...]]:
        """Histogram edges per latency histogram, SLO thresholds included."""
        return latency_buckets(self.buckets, self.targets)


def parse_duration(
    value: object,
    path: str,
    allow_zero: bool = False,
    maximum: float = MAX_DURATION,
    minimum: float = MIN_DURATION,
) -> float:
    """``15s``, ``1m30s``, ``250ms``, ``1.5h`` or a plain number of seconds, within
    [``minimum``, ``maximum``] (or exactly 0 when ``allow_zero``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a duration like 15s, got {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ConfigError(f"{path}: bad duration {value[:40]!r} (use e.g. 500ms, 15s, 1m30s)")
    else:
        raise ConfigError(f"{path}: expected a duration like 15s, got {type(value).__name__}")
    shown = repr(value)[:40]
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"{path}: duration must be positive, got {shown}")
    if seconds > maximum:
        raise ConfigError(f"{path}: at most {_human(maximum)}, got {shown}")
    if 0 < seconds < minimum:
        raise ConfigError(f"{path}: at least {_human(minimum)}, got {shown}")
    return seconds


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


class Section:
    """A mapping being read: typed getters, and ``done()`` rejects whatever was not read."""

    def __init__(self, data: object, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.path = path
        self._seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.at(key)}: expected a string, got {type(value).__name__}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.at(key)}: expected true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            shown = repr(value)[:40]
            raise ConfigError(
                f"{self.at(key)}: expected an integer from {minimum} to {maximum}, got {shown}"
            )
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.at(key)}: expected a number, got {value!r}")
        if not (low < value <= high):
            shown = repr(value)[:40]
            raise ConfigError(f"{self.at(key)}: must be in ({low:g}, {high:g}], got {shown}")
        return float(value)

    def duration(
        self,
        key: str,
        default: float,
        allow_zero: bool = False,
        maximum: float = MAX_DURATION,
        minimum: float = MIN_DURATION,
    ) -> float:
        return parse_duration(self.raw(key, default), self.at(key), allow_zero, maximum, minimum)

    def section(self, key: str) -> Section:
        return Section(self.raw(key), self.at(key))

    def expect(self, keys: Sequence[str]) -> None:
        """Refuse an unknown key before anything else is read, so a misspelt section is
        named as such rather than reported as missing."""
        self._refuse(sorted(set(self.data) - set(keys)), keys)

    def done(self) -> None:
        self._refuse(sorted(set(self.data) - self._seen), sorted(self._seen))

    def _refuse(self, unknown: Sequence[object], known: Sequence[str]) -> None:
        if not unknown:
            return
        key = str(unknown[0])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{self.at(key[:64])}: unknown key{hint}")


def _header_value(value: str, path: str) -> str:
    # The value may be a credential: errors never echo it.
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError(f"{path}: expected a one-line string (no CR, LF or NUL)")
    if len(value) > MAX_HEADER_VALUE:
        raise ConfigError(f"{path}: longer than {MAX_HEADER_VALUE} characters")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"{path}: holds characters an HTTP header cannot carry") from None
    return value


def _headers(section: Section) -> tuple[dict[str, str], frozenset[str]]:
    """Extra request headers, and the names of those whose values are secrets: given as
    ``{env: VAR}`` or ``{file: PATH}``, or named like a credential (``api-key``, ...)."""
    raw = section.raw("headers", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section.at('headers')}: expected a mapping of name: value")
    if len(raw) > MAX_HEADERS:
        raise ConfigError(f"{section.at('headers')}: at most {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    secret: set[str] = set()
    for name, value in raw.items():
        if not isinstance(name, str) or not re.fullmatch(
            r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}", name
        ):
            raise ConfigError(f"{section.at('headers')}: bad header name {str(name)[:64]!r}")
        path = f"{section.at('headers')}.{name}"
        if name.lower() == "authorization":
            raise ConfigError(
                f"{path}: use api_key_file or api_key_env (a bearer token) or basic_auth"
            )
        if isinstance(value, dict):
            source = Section(value, path)
            try:
                loaded = load_secret(source.text("env"), source.text("file"), f"header {name}")
            except SecretError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            source.done()
            if loaded is None:
                raise ConfigError(f"{path}: expected a string, {{env: VAR}} or {{file: PATH}}")
            headers[name] = loaded.reveal()
            secret.add(name)
        elif isinstance(value, str):
            headers[name] = _header_value(value, path)
            if is_credential_header(name):
                secret.add(name)
        else:
            raise ConfigError(f"{path}: expected a string, {{env: VAR}} or {{file: PATH}}")
    return headers, frozenset(secret)


def _slo(section: Section) -> SLO:
    default = SLO()
    slo = SLO(
        ttft_seconds=section.duration("ttft", default.ttft_seconds),
        tpot_seconds=section.duration("tpot", default.tpot_seconds),
        objective=section.number("objective", default.objective, 0.0, 1.0),
    )
    if slo.objective >= 1.0:
        raise ConfigError(f"{section.at('objective')}: must be below 1 (no error budget at 1)")
    section.done()
    return slo


def _timeouts(section: Section, own: frozenset[str]) -> Timeouts:
    """A phase the target or module sets itself (``own``) must fit in the total; one
    inherited from ``target_defaults`` or the built-in defaults is shortened to the total,
    so ``timeouts: {total: 10s}`` alone is a 10-second probe."""
    defaults = Timeouts()
    total = section.duration("total", defaults.total, maximum=MAX_TIMEOUT)
    values = {}
    for name in ("connect", "headers", "first_token"):
        value = section.duration(name, getattr(defaults, name), maximum=MAX_TIMEOUT)
        values[name] = value if name in own else min(value, total)
    section.done()
    if values["first_token"] > total:
        raise ConfigError(f"{section.at('first_token')}: longer than {section.at('total')}")
    return Timeouts(total=total, **values)


# Where the one Authorization header comes from: set by a target or module, any of them
# replaces all of the defaults' (basic auth there replaces an API key in target_defaults).
CREDENTIAL_KEYS = ("api_key_env", "api_key_file", "basic_auth")


def merge_settings(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``own`` over ``defaults``; nested mappings (``timeouts``, ``slo``, ``headers``) are
    merged key by key, so setting one timeout keeps the defaults' others. The credential
    is one setting: ``own`` setting any of ``CREDENTIAL_KEYS`` replaces the defaults'."""
    merged = dict(defaults)
    if any(key in own for key in CREDENTIAL_KEYS):
        for key in CREDENTIAL_KEYS:
            merged.pop(key, None)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def _target(section: Section, defaults: Mapping[str, Any]) -> TargetConfig:
    merged = Section(merge_settings(defaults, section.data), section.path)
    own_timeouts = section.data.get("timeouts")
    own = frozenset(own_timeouts) if isinstance(own_timeouts, dict) else frozenset()
    name = merged.text("name")
    if not name or not _NAME.match(name):
        raise ConfigError(
            f"{merged.at('name')}: required; letters, digits and _.:- (at most 63), got {name!r}"
        )
    url = merged.text("url")
    if not url:
        raise ConfigError(f"{merged.at('url')}: required")
    endpoint = merged.text("endpoint")
    try:
        target = parse_target(url, endpoint)
    except TargetError as exc:
        raise ConfigError(f"{merged.at('url')}: {exc}") from None
    env_var = merged.text("api_key_env")
    key_file = merged.text("api_key_file")
    try:
        api_key = load_api_key(env_var, key_file)
    except SecretError as exc:
        where = merged.at("api_key_env" if env_var and not key_file else "api_key_file")
        raise ConfigError(f"{where}: {exc}") from None
    basic_auth = _basic_auth(merged)
    if basic_auth is not None and api_key is not None:
        raise ConfigError(
            f"{merged.at('basic_auth')}: not together with "
            f"{merged.at('api_key_env' if env_var else 'api_key_file')} "
            "(one Authorization header: an API key or basic auth)"
        )
    engine = merged.text("engine")
    metrics_url = merged.raw("metrics_url")
    if engine is not None and metrics_url is not None:
        raise ConfigError(f"{merged.at('metrics_url')}: the engine {engine!r} has it")
    if metrics_url is False:
        metrics_url = None
    elif metrics_url is None:
        metrics_url = None if engine else target.api_root.removesuffix("/v1") + "/metrics"
    else:
        metrics_url = _metrics_url(metrics_url, merged.at("metrics_url"))
    headers, secret_headers = _headers(merged)
    interval = merged.duration("interval", 15.0, minimum=MIN_INTERVAL)
    jitter = merged.duration("jitter", 0.0, allow_zero=True)
    if jitter >= interval:
        raise ConfigError(f"{merged.at('jitter')}: must be shorter than the interval")
    tool_call = merged.boolean("tool_call", False)
    if tool_call and not target.protocol.tools:
        raise ConfigError(
            f"{merged.at('tool_call')}: the {target.endpoint} endpoint has no tool calls "
            "(chat, responses or messages have)"
        )
    slo = _slo(merged.section("slo"))
    models, all_models = _models(merged, slo)
    config = TargetConfig(
        name=name,
        target=target,
        models=models,
        all_models=all_models,
        prompt=merged.text("prompt", DEFAULT_PROMPT) or DEFAULT_PROMPT,
        max_tokens=merged.integer("max_tokens", 64, maximum=1_000_000),
        ignore_eos=merged.boolean("ignore_eos", True),
        interval=interval,
        jitter=jitter,
        timeouts=_timeouts(merged.section("timeouts"), own),
        api_key=api_key,
        basic_auth=basic_auth,
        headers=headers,
        secret_headers=secret_headers,
        accept_encoding=merged.text("accept_encoding", DEFAULT_ACCEPT_ENCODING)
        or DEFAULT_ACCEPT_ENCODING,
        verify_tls=not merged.boolean("tls_insecure_skip_verify", False),
        tool_call=tool_call,
        # Resolved against the engines by _engines(): the named one, else one at metrics_url.
        engine=engine if engine is not None else metrics_url,
        slo=slo,
    )
    merged.done()
    return config


def _basic_auth(target: Section) -> BasicAuth | None:
    """``basic_auth: {username: NAME, password_file: PATH}`` (or ``password_env: VAR``):
    the password loaded and checked as an API key is; errors name the key, never a value."""
    raw = target.raw("basic_auth")
    if raw is None:
        return None
    path = target.at("basic_auth")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected {{username: NAME, password_file: PATH}} or "
            "{username: NAME, password_env: VAR}"
        )
    section = Section(raw, path)
    section.expect(("username", "password_file", "password_env"))
    username = section.text("username")
    env_var = section.text("password_env")
    file_path = section.text("password_file")
    if username is None:
        raise ConfigError(
            f"{section.at('username')}: required (the user name that goes with the password)"
        )
    if env_var and file_path:
        raise ConfigError(
            f"{section.at('password_env')}: not together with {section.at('password_file')} "
            "(one password)"
        )
    try:
        password = load_secret(env_var, file_path, "basic-auth password")
    except SecretError as exc:
        where = section.at("password_env" if env_var else "password_file")
        raise ConfigError(f"{where}: {exc}") from None
    if password is None:
        raise ConfigError(
            f"{path}: no password (set {section.at('password_file')} or "
            f"{section.at('password_env')})"
        )
    section.done()
    try:
        return BasicAuth(username, password)
    except SecretError as exc:  # the user name: the password was checked as it was loaded
        raise ConfigError(f"{section.at('username')}: {exc}") from None


def _models(section: Section, slo: SLO) -> tuple[tuple[ModelConfig, ...], bool]:
    """``model``: one name, ``all`` (every model /v1/models lists), or a list of names
    and ``{name: NAME, slo: {...}}`` (its own SLO, merged over the target's key by key);
    unset: the first model /v1/models lists. Models and their SLOs, and whether all."""
    path = section.at("model")
    raw = section.raw("model")
    if raw is None or raw == "":
        return (), False
    if raw == ALL_MODELS:
        return (), True
    if isinstance(raw, str):
        return (ModelConfig(raw),), False
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{path}: expected a model name, {ALL_MODELS}, or a non-empty list of models"
        )
    if len(raw) > MAX_MODELS:
        raise ConfigError(f"{path}: at most {MAX_MODELS} models")
    models: list[ModelConfig] = []
    labels: dict[str, int] = {}  # label -> index of the model that has it
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        if item == ALL_MODELS:
            raise ConfigError(
                f"{at}: {ALL_MODELS} stands alone (model: {ALL_MODELS}, every model the server "
                f"lists); a model named {ALL_MODELS} is {{name: {ALL_MODELS}}}"
            )
        if isinstance(item, dict):
            entry = Section(item, at)
            entry.expect(("name", "slo"))
            name = entry.text("name")
            own = entry.raw("slo")
            if own is not None and not isinstance(own, dict):
                raise ConfigError(f"{entry.at('slo')}: expected a mapping")
            model_slo = None
            if own is not None:
                base = {"ttft": slo.ttft_seconds, "tpot": slo.tpot_seconds}
                merged = {**base, "objective": slo.objective, **own}
                model_slo = _slo(Section(merged, entry.at("slo")))
            entry.done()
        else:
            name, model_slo = item, None
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}: expected a model name or {{name: NAME, slo: {{...}}}}")
        label = model_label(name)
        if label in labels:
            j = labels[label]
            if models[j].name == name:
                raise ConfigError(f"{at}: duplicate model {name[:64]!r} (also {path}[{j}])")
            raise ConfigError(
                f"{at}: {name[:64]!r} and {path}[{j}] would share the model label {label!r}"
            )
        labels[label] = i
        models.append(ModelConfig(name, model_slo))
    return tuple(models), False


def _metrics_url(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a URL or false")
    try:
        parse_target(value)
    except TargetError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return value


def _engines(
    raw: object, targets: Sequence[TargetConfig], named_engine: Sequence[bool]
) -> tuple[tuple[EngineConfig, ...], tuple[TargetConfig, ...]]:
    """The ``engines:`` list, plus one engine for each metrics URL a target brings of its
    own (named after its first target; targets sharing the URL share it), and the targets
    with ``engine`` resolved to an engine's name."""
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ConfigError("engines: expected a list")
    if len(raw) > MAX_TARGETS:
        raise ConfigError(f"engines: at most {MAX_TARGETS}")
    engines: dict[str, EngineConfig] = {}
    for i, item in enumerate(raw):
        section = Section(item, f"engines[{i}]")
        name = section.text("name")
        if not name or not _NAME.match(name):
            raise ConfigError(
                f"{section.at('name')}: required; letters, digits and _.:- (at most 63), "
                f"got {name!r}"
            )
        if name in engines:
            raise ConfigError(f"{section.at('name')}: duplicate engine name {name!r}")
        kind = section.text("kind", "auto") or "auto"
        if kind != "auto" and kind not in KIND_NAMES:
            raise ConfigError(
                f"{section.at('kind')}: one of auto, {', '.join(KIND_NAMES)} "
                f"(auto: recognised from what it serves), got {kind!r}"
            )
        url = section.raw("metrics_url")
        if url is None:
            raise ConfigError(f"{section.at('metrics_url')}: required")
        engines[name] = EngineConfig(
            name=name,
            metrics_url=_metrics_url(url, section.at("metrics_url")),
            kind=kind,
            interval=section.duration("interval", 15.0, minimum=MIN_INTERVAL),
        )
        section.done()
    by_url = {e.metrics_url: e.name for e in engines.values()}
    resolved = []
    for i, (target, named) in enumerate(zip(targets, named_engine, strict=True)):
        if target.engine is None:
            resolved.append(target)
            continue
        if named:
            if target.engine not in engines:
                known = ", ".join(sorted(engines)) or "none configured"
                raise ConfigError(
                    f"targets[{i}].engine: no engine named {target.engine!r} ({known})"
                )
            resolved.append(target)
            continue
        url = target.engine
        if url not in by_url:
            if target.name in engines:
                raise ConfigError(
                    f"targets[{i}]: its own /metrics would be an engine named {target.name!r}, "
                    "which engines: already has; name its engine (engine:) or set "
                    "metrics_url: false"
                )
            engines[target.name] = EngineConfig(target.name, url, "auto", target.interval)
            by_url[url] = target.name
        resolved.append(replace(target, engine=by_url[url]))
    return tuple(engines.values()), tuple(resolved)


def _buckets(section: Section) -> dict[str, tuple[float, ...]]:
    buckets = dict(DEFAULT_BUCKETS)
    for name in DEFAULT_BUCKETS:
        if not section.has(name):
            continue
        raw = section.raw(name)
        path = section.at(name)
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{path}: expected a non-empty list of durations")
        if len(raw) > MAX_BUCKETS:
            raise ConfigError(f"{path}: at most {MAX_BUCKETS} bucket edges")
        edges = [parse_duration(v, f"{path}[{i}]") for i, v in enumerate(raw)]
        if edges != sorted(set(edges)):
            raise ConfigError(f"{path}: bucket edges must be strictly increasing")
        buckets[name] = tuple(edges)
    section.done()
    return buckets


def _gpu(section: Section) -> GpuCollectorConfig:
    # A sidecar usually cannot see the pod's GPU (see the README), so Kubernetes starts
    # with the collector off unless the config turns it on.
    match = section.raw("served_model_match", ["vllm"])
    if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise ConfigError(f"{section.at('served_model_match')}: expected a list of strings")
    price = section.raw("price_per_gpu_hour")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                              or not 0 <= price < 1e6):  # fmt: skip
        raise ConfigError(f"{section.at('price_per_gpu_hour')}: expected a number >= 0")
    config = GpuCollectorConfig(
        enabled=section.boolean("enabled", not running_in_kubernetes()),
        interval=section.duration("interval", 10.0),
        deadline=section.duration("deadline", 3.0, maximum=MAX_TIMEOUT),
        backoff_max=section.duration("backoff_max", 300.0),
        served_model_match=tuple(match),
        price_per_gpu_hour=None if price is None else float(price),
        gpu_count=section.integer("gpu_count", 1, maximum=1024),
        efficiency_window=section.duration("efficiency_window", 60.0),
    )
    section.done()
    if config.deadline >= config.interval:
        raise ConfigError(f"{section.at('deadline')}: must be shorter than the interval")
    return config


def _otlp(section: Section) -> OtlpSettings:
    """Only what the file sets; everything else is left to the OTEL_* variables."""

    def optional_duration(key: str) -> float | None:
        return section.duration(key, 1.0, maximum=MAX_TIMEOUT) if section.has(key) else None

    def optional_bool(key: str) -> bool | None:
        return section.boolean(key, False) if section.has(key) else None

    def optional_int(key: str) -> int | None:
        return section.integer(key, 1) if section.has(key) else None

    headers = section.raw("headers")
    if headers is not None and (
        not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ConfigError(f"{section.at('headers')}: expected a mapping of name: value")
    compression = section.text("compression")
    if compression is not None and compression not in ("gzip", "deflate", "none"):
        raise ConfigError(f"{section.at('compression')}: gzip, deflate or none")
    protocol = section.text("protocol")
    if protocol is not None and protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(f"{section.at('protocol')}: grpc or http/protobuf")
    certificate = section.text("certificate")
    if certificate is not None and not Path(certificate).is_file():
        raise ConfigError(f"{section.at('certificate')}: {certificate} does not exist")
    try:
        settings = OtlpSettings(
            enabled=optional_bool("enabled"),
            protocol=protocol,  # type: ignore[arg-type]
            endpoint=section.text("endpoint"),
            headers=headers,
            timeout=optional_duration("timeout"),
            compression=compression,  # type: ignore[arg-type]
            certificate=certificate,
            export_interval=optional_duration("export_interval"),
            service_name=section.text("service_name"),
            provider_name=section.text("provider_name", DEFAULT_PROVIDER) or DEFAULT_PROVIDER,
            traces=optional_bool("traces"),
            span_queue_size=optional_int("span_queue_size"),
            max_series_per_instrument=section.integer("max_series_per_instrument", 1000),
        )
    except OtlpSettingsError as exc:
        raise ConfigError(f"{section.path}: {exc}") from None
    section.done()
    return settings


def _traces_receiver(section: Section) -> TracesReceiverSettings:
    """Off unless an address is set; the addresses cannot change on reload."""

    def address(key: str) -> str | None:
        value = section.text(key)
        return None if value is None else _listen_address(value, section.at(key))

    settings = TracesReceiverSettings(
        http_address=address("http_listen_address"),
        grpc_address=address("grpc_listen_address"),
        join_wait=section.duration("join_wait", 30.0, maximum=MAX_TIMEOUT),
        max_pending=section.integer("max_pending", 10_000),
        max_request_bytes=section.integer(
            "max_request_bytes", 4 * MIB, minimum=1024, maximum=64 * MIB
        ),
        max_concurrency=section.integer("max_concurrency", 8, maximum=256),
        read_timeout=section.duration("read_timeout", 10.0, maximum=MAX_TIMEOUT),
        forward=section.boolean("forward", True),
        forward_queue_size=section.integer("forward_queue_size", 256, maximum=100_000),
    )
    section.done()
    return settings


def _listen_address(value: str | None, path: str) -> str:
    value = value or DEFAULT_LISTEN
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{path}: expected host:port, got {value!r}")
    return value


def _credential_hosts(raw: object, path: str) -> tuple[HostPattern, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected a list of host names or patterns")
    patterns = []
    for i, entry in enumerate(raw):
        try:
            patterns.append(parse_host_pattern(entry))
        except CredentialHostError as exc:
            raise ConfigError(f"{path}[{i}]: {exc}") from None
    return tuple(patterns)


def _modules(section: Section, defaults: Mapping[str, Any]) -> dict[str, Module]:
    if len(section.data) > MAX_MODULES:
        raise ConfigError(f"{section.path}: at most {MAX_MODULES} modules")
    modules: dict[str, Module] = {"default": Module()}
    for name in list(section.data):
        raw = section.raw(name)
        path = section.at(name)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of probe settings")
        if "name" in raw or "url" in raw:
            raise ConfigError(f"{path}: a module has no name or url (the scrape gives the target)")
        settings = {k: v for k, v in raw.items() if k != "credential_hosts"}
        hosts = _credential_hosts(raw.get("credential_hosts"), f"{path}.credential_hosts")
        # Validate now, with a stand-in URL, so a bad module fails at load, not at scrape.
        _target(Section({**settings, "name": "probe", "url": "http://127.0.0.1"}, path), defaults)
        modules[str(name)] = Module(settings, hosts)
    section.done()
    return modules


TOP_LEVEL_KEYS = (
    "web",
    "engines",
    "target_defaults",
    "targets",
    "modules",
    "otlp",
    "traces_receiver",
    "collectors",
    "max_concurrency",
    "max_models_per_target",
    "shutdown_grace",
    "histogram_buckets",
)


def parse_config(data: object) -> Config:
    root = Section(data, "")
    root.expect(TOP_LEVEL_KEYS)
    web = root.section("web")
    listen = _listen_address(web.text("listen_address", DEFAULT_LISTEN), "web.listen_address")
    web_config_file = web.text("config_file")
    if web_config_file and not Path(web_config_file).is_file():
        raise ConfigError(f"web.config_file: {web_config_file} does not exist")
    web.done()
    defaults = root.raw("target_defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ConfigError("target_defaults: expected a mapping")
    if "name" in defaults or "url" in defaults:
        raise ConfigError("target_defaults: name and url belong to each target")
    if "credential_hosts" in defaults:
        raise ConfigError(
            "target_defaults.credential_hosts: belongs to a /probe module "
            "(modules.NAME.credential_hosts; modules.default for /probe without module=)"
        )
    raw_targets = root.raw("targets")
    if not isinstance(raw_targets, list) or not raw_targets:
        raise ConfigError("targets: at least one target is required")
    if len(raw_targets) > MAX_TARGETS:
        raise ConfigError(f"targets: at most {MAX_TARGETS} targets in one daemon")
    targets = tuple(
        _target(Section(t, f"targets[{i}]"), defaults) for i, t in enumerate(raw_targets)
    )
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"targets[{i}].name: duplicate target name {name!r}")
    named_engine = [isinstance(t, dict) and "engine" in t for t in raw_targets]
    named_engine = [named or "engine" in defaults for named in named_engine]
    engines, targets = _engines(root.raw("engines"), targets, named_engine)
    modules = _modules(root.section("modules"), defaults)
    otlp = _otlp(root.section("otlp"))
    traces_receiver = _traces_receiver(root.section("traces_receiver"))
    collectors = root.section("collectors")
    scrape = collectors.section("engines")
    engines_on = scrape.boolean("enabled", True)  # false: no engine of any kind is scraped
    kinds = []
    for kind in KIND_NAMES:
        section = collectors.section(kind)
        if section.boolean("enabled", True) and engines_on:
            kinds.append(kind)
        section.done()
    engine_scrape = EngineCollectorConfig(
        kinds=frozenset(kinds),
        timeout=scrape.duration("timeout", 5.0, maximum=MAX_TIMEOUT),
        max_bytes=scrape.integer("max_bytes", 16 * MIB, minimum=1024, maximum=1024 * MIB),
        reexpose=scrape.boolean("reexpose", True),
    )
    scrape.done()
    gpu_config = _gpu(collectors.section("gpu"))
    collectors.done()
    max_models = root.integer("max_models_per_target", 10, maximum=1000)
    for i, target in enumerate(targets):
        if len(target.models) > max_models:
            raise ConfigError(
                f"targets[{i}].model: {len(target.models)} models, more than "
                f"max_models_per_target ({max_models})"
            )
    config = Config(
        targets=targets,
        engines=engines,
        listen_address=listen,
        web_config_file=web_config_file,
        max_concurrency=root.integer("max_concurrency", 4, maximum=1024),
        max_models_per_target=max_models,
        shutdown_grace=root.duration("shutdown_grace", 10.0, maximum=MAX_TIMEOUT),
        buckets=_buckets(root.section("histogram_buckets")),
        engine_scrape=engine_scrape,
        gpu=gpu_config,
        otlp=otlp,
        traces_receiver=traces_receiver,
        modules=modules,
        target_defaults=defaults,
    )
    root.done()
    return config


def read_config_text(path: str | Path, what: str = "config file") -> str:
    """The text of a YAML file, refused by its size (or kind) before any parsing."""
    try:
        raw = read_limited(path, MAX_CONFIG_BYTES, what)
    except FileRefused as exc:
        raise ConfigError(str(exc)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def load_config(path: str | Path) -> Config:
    text = read_config_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    return parse_config(data)


def probe_target(settings: Mapping[str, Any]) -> TargetConfig:
    """One target from settings given some other way than a file (``streamobs probe``'s
    flags): the same parser, defaults and checks as a config file's targets, so a probe
    from the command line is the probe the daemon would run."""
    return _target(Section(dict(settings), ""), {})


def single_target_config(
    name: str, url: str, model: str | None, extra: Mapping[str, Any] | None = None
) -> Config:
    """A one-target config built from command-line flags (``streamobs run --target``)."""
    target: dict[str, Any] = {"name": name, "url": url, **(extra or {})}
    if model:
        target["model"] = model
    return parse_config({"targets": [target]})


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line settings: they win over the file at start and on every reload."""

    listen_address: str | None = None
    # --collector.NAME / --no-collector.NAME, by collector name.
    collectors: Mapping[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.listen_address is not None:
            _listen_address(self.listen_address, "--listen-address")

    def apply(self, config: Config) -> Config:
        if self.listen_address is not None:
            config = replace(config, listen_address=self.listen_address)
        for name, enabled in self.collectors.items():
            if name in KIND_NAMES:
                scrape = config.engine_scrape
                kinds = scrape.kinds | {name} if enabled else scrape.kinds - {name}
                config = replace(config, engine_scrape=replace(scrape, kinds=kinds))
                continue
            section = getattr(config, name)
            config = replace(config, **{name: replace(section, enabled=enabled)})
        return config


def target_names(config: Config) -> Sequence[str]:
    return [t.name for t in config.targets]
