"""OTLP settings: what the config file says, and the standard ``OTEL_*`` variables for the
rest. An unset field (None) is left to the SDK, which reads the variables itself; only the
choices the SDK leaves to its caller (on or off, which protocol) are made here, the way the
SDK's own auto-configuration makes them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from streamobs import __version__
from streamobs.export.otlp.health import Signal
from streamobs.export.otlp.names import DEFAULT_PROVIDER

Protocol = Literal["grpc", "http/protobuf"]
CompressionName = Literal["gzip", "deflate", "none"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
DEFAULT_SERVICE_NAME = "streamobs"
# Without a distinct instance id, replicas' cumulative series would collide in the backend.
_INSTANCE_ID = str(uuid.uuid4())
_K8S_DOWNWARD_API = (
    ("k8s.pod.name", "POD_NAME"),
    ("k8s.namespace.name", "POD_NAMESPACE"),
    ("k8s.node.name", "NODE_NAME"),
)
_ENDPOINT_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


class OtlpSettingsError(ValueError):
    """A setting or ``OTEL_*`` variable the exporter cannot work with."""


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """None means "as the ``OTEL_*`` variables say" (and the SDK's default without them)."""

    # None: on when an OTEL_EXPORTER_OTLP_[METRICS_|TRACES_]ENDPOINT is set, unless
    # OTEL_SDK_DISABLED=true.
    enabled: bool | None = None
    # None: OTEL_EXPORTER_OTLP_{METRICS,TRACES}_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, grpc.
    protocol: Protocol | None = None
    # A base URL like OTEL_EXPORTER_OTLP_ENDPOINT: http/protobuf appends /v1/metrics and
    # /v1/traces; grpc uses host:port, plaintext for http://.
    endpoint: str | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # may hold credentials
    timeout: float | None = None  # seconds per export, retries included
    compression: CompressionName | None = None
    certificate: str | None = None  # CA bundle (PEM) to verify the collector with
    export_interval: float | None = None  # seconds; None: OTEL_METRIC_EXPORT_INTERVAL (60 s)
    service_name: str | None = None  # None: OTEL_SERVICE_NAME, else "streamobs"
    provider_name: str = DEFAULT_PROVIDER  # gen_ai.provider.name
    # None: on when OTEL_TRACES_EXPORTER names otlp.
    traces: bool | None = None
    span_queue_size: int | None = None  # None: OTEL_BSP_MAX_QUEUE_SIZE (2048)
    max_series_per_instrument: int = 1000

    def __post_init__(self) -> None:
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise OtlpSettingsError(
                f"protocol must be grpc or http/protobuf, not {self.protocol!r}"
            )
        for name in ("timeout", "export_interval"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise OtlpSettingsError(f"{name} must be positive, got {value!r}")
        if self.max_series_per_instrument < 1:
            raise OtlpSettingsError("max_series_per_instrument must be at least 1")
        if self.span_queue_size is not None and self.span_queue_size < 1:
            raise OtlpSettingsError("span_queue_size must be at least 1")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _env_list(name: str) -> list[str]:
    return [part.strip().lower() for part in os.environ.get(name, "").split(",") if part.strip()]


def export_enabled(settings: OtlpSettings) -> bool:
    if settings.enabled is not None:
        return settings.enabled
    if _env_true("OTEL_SDK_DISABLED"):
        return False
    return any(os.environ.get(name) for name in _ENDPOINT_VARS)


def signal_enabled(settings: OtlpSettings, signal: Signal) -> bool:
    if signal == "traces":
        if settings.traces is not None:
            return settings.traces
        return "otlp" in _env_list("OTEL_TRACES_EXPORTER")
    return "none" not in _env_list("OTEL_METRICS_EXPORTER")


def protocol_for(settings: OtlpSettings, signal: Signal) -> Protocol:
    """The SDK's precedence: the per-signal variable, the general one, then grpc."""
    if settings.protocol is not None:
        return settings.protocol
    per_signal = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    value = (
        os.environ.get(per_signal) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if not value:
        return "grpc"
    for protocol in PROTOCOLS:
        if value == protocol:
            return protocol
    raise OtlpSettingsError(
        f"unsupported OTLP protocol {value!r} (from the environment); use grpc or http/protobuf"
    )


def build_resource(settings: OtlpSettings) -> Resource:
    """``service.name`` (config, else OTEL_SERVICE_NAME, else streamobs), everything in
    OTEL_RESOURCE_ATTRIBUTES, and in Kubernetes the pod, namespace and node from the
    downward-API variables. The variables win over the defaults set here."""
    base: dict[str, str] = {"service.version": __version__, "service.instance.id": _INSTANCE_ID}
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        for attribute, variable in _K8S_DOWNWARD_API:
            value = os.environ.get(variable)
            if value:
                base[attribute] = value
    explicit = {SERVICE_NAME: settings.service_name} if settings.service_name else {}
    resource = Resource(base).merge(Resource.create(explicit))
    name = resource.attributes.get(SERVICE_NAME)
    if not isinstance(name, str) or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource
