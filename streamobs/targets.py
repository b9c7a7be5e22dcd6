"""What the daemon probes: one target's settings and objectives, as immutable records.

Below the config parser and beside the probe: exporters, the scheduler and the status board
read these records, and none of them needs to know how the YAML was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamobs.probe.spec import (
    DEFAULT_ACCEPT_ENCODING,
    DEFAULT_PROMPT,
    ProbeSpec,
    Target,
    Timeouts,
)
from streamobs.secret import BasicAuth, Credential, Secret, credential_secrets

# Model label (and request model) while /v1/models has not answered: the probe still runs,
# so an unreachable server is counted as a failed probe, not silently skipped.
UNKNOWN_MODEL = "unknown"
# ``model: all``: every model /v1/models lists (up to max_models_per_target).
ALL_MODELS = "all"

# Default histogram edges (seconds). SLO thresholds are always added to them.
DEFAULT_BUCKETS: dict[str, tuple[float, ...]] = {
    "ttft": (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0),
    "tpot": (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
    "itl": (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5),
    "e2e": (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0),
    "headers": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
}


@dataclass(frozen=True, slots=True)
class SLO:
    ttft_seconds: float = 2.0
    tpot_seconds: float = 0.1
    objective: float = 0.99


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model a target probes (a LoRA adapter, an alias), with its own SLO or None
    (the target's)."""

    name: str
    slo: SLO | None = None


@dataclass(frozen=True, slots=True)
class TargetConfig:
    name: str
    target: Target
    # Probed in turn, each under its own model label. None of them and not all_models:
    # the first model /v1/models lists, discovered before the first probe.
    models: tuple[ModelConfig, ...] = ()
    all_models: bool = False  # every model /v1/models lists, re-listed as it changes
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 64
    ignore_eos: bool = True
    interval: float = 15.0
    jitter: float = 0.0  # seconds; each wait is interval ± a uniform draw of this
    timeouts: Timeouts = field(default_factory=Timeouts)
    api_key: Secret | None = None  # sent as a bearer token
    basic_auth: BasicAuth | None = None  # or this (never both: one Authorization header)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret_headers: frozenset[str] = frozenset()  # names in headers whose values are secrets
    accept_encoding: str = DEFAULT_ACCEPT_ENCODING
    verify_tls: bool = True
    tool_call: bool = False  # ask for a call of the fixed probe function (tool-call path)
    engine: str | None = None  # the engine (model server) behind this path; None: none scraped
    slo: SLO = field(default_factory=SLO)

    @property
    def model(self) -> str | None:
        """The one configured model; None when it is discovered or there are several."""
        return self.models[0].name if len(self.models) == 1 else None

    def slo_for(self, model: str) -> SLO:
        """The SLO a probe of ``model`` is judged by: the model's own, else the target's."""
        for configured in self.models:
            if configured.name == model and configured.slo is not None:
                return configured.slo
        return self.slo

    def model_slos(self) -> tuple[tuple[str, SLO], ...]:
        """The configured models whose SLO differs from the target's, with it."""
        return tuple(
            (m.name, m.slo) for m in self.models if m.slo is not None and m.slo != self.slo
        )

    def slos(self) -> tuple[SLO, ...]:
        """Every SLO this target's probes are judged by: the target's, then its models'."""
        return (self.slo, *dict.fromkeys(slo for _, slo in self.model_slos()))

    def probe_spec(self, model: str) -> ProbeSpec:
        """One probe of this target and ``model``: what the scheduler, ``/probe`` and
        ``streamobs probe`` all run."""
        return ProbeSpec(
            target=self.target,
            model=model,
            prompt=self.prompt,
            max_tokens=self.max_tokens,
            ignore_eos=self.ignore_eos,
            timeouts=self.timeouts,
            api_key=self.api_key,
            basic_auth=self.basic_auth,
            headers=self.headers,
            accept_encoding=self.accept_encoding,
            verify_tls=self.verify_tls,
            tool_call=self.tool_call,
        )

    @property
    def credential(self) -> Credential | None:
        """What the ``Authorization`` header carries, for probes and ``/v1/models``."""
        return self.api_key if self.api_key is not None else self.basic_auth

    def secrets(self) -> tuple[Secret | str, ...]:
        """Every credential this target sends, for ``secret.redact``: the API key, or the
        basic-auth password and its base64 token, and the secret headers' values."""
        values = [v for k, v in self.headers.items() if k in self.secret_headers]
        return (*credential_secrets(self.credential), *values)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """One model server's metrics endpoint, scraped once however many targets (paths:
    direct, nginx, a gateway) reach it."""

    name: str
    metrics_url: str
    kind: str = "auto"  # or one of the engine collectors' kinds; auto: recognised
    interval: float = 15.0


def latency_buckets(
    configured: Mapping[str, tuple[float, ...]], targets: Iterable[TargetConfig]
) -> dict[str, tuple[float, ...]]:
    """Configured edges per histogram plus every SLO threshold that applies, so the SLO
    query ``le="<threshold>"`` always exists."""
    targets = tuple(targets)
    out = {}
    for name, edges in configured.items():
        extra = set()
        if name == "ttft":
            extra = {slo.ttft_seconds for t in targets for slo in t.slos()}
        elif name == "tpot":
            extra = {slo.tpot_seconds for t in targets for slo in t.slos()}
        out[name] = tuple(sorted({*edges, *extra}))
    return out
