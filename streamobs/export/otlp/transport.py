"""The SDK's OTLP exporters built from settings. Whatever a setting leaves as None is passed
as None, so the exporter reads its ``OTEL_EXPORTER_OTLP_*`` variable as it always does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from streamobs.export.otlp.health import Signal
from streamobs.export.otlp.settings import OtlpSettings, OtlpSettingsError, Protocol

_HTTP_PATHS: dict[Signal, str] = {"metrics": "/v1/metrics", "traces": "/v1/traces"}


def metric_exporter(settings: OtlpSettings, protocol: Protocol) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(**_grpc_options(settings))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(**_http_options(settings, "metrics"))


def span_exporter(settings: OtlpSettings, protocol: Protocol) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(**_grpc_options(settings))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(**_http_options(settings, "traces"))


def endpoint_of(exporter: object) -> str:
    """Where an SDK exporter sends, for log lines only."""
    inner = getattr(exporter, "_endpoint", None)
    return inner if isinstance(inner, str) else "the OTLP endpoint"


def _grpc_options(settings: OtlpSettings) -> dict[str, Any]:
    import grpc  # type: ignore[import-untyped]

    options: dict[str, Any] = {"endpoint": settings.endpoint, "timeout": settings.timeout}
    if settings.headers:
        # gRPC metadata keys must be lower case.
        options["headers"] = {k.lower(): v for k, v in settings.headers.items()}
    if settings.compression is not None:
        options["compression"] = {
            "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate,
            "none": grpc.Compression.NoCompression,
        }[settings.compression]
    if settings.certificate:
        options["credentials"] = grpc.ssl_channel_credentials(
            root_certificates=_read_certificate(settings.certificate)
        )
    return options


def _http_options(settings: OtlpSettings, signal: Signal) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": settings.timeout}
    if settings.endpoint:
        options["endpoint"] = settings.endpoint.rstrip("/") + _HTTP_PATHS[signal]
    if settings.headers:
        options["headers"] = dict(settings.headers)
    if settings.compression is not None:
        options["compression"] = HttpCompression(settings.compression)
    if settings.certificate:
        _read_certificate(settings.certificate)  # fail at start, not at the first export
        options["certificate_file"] = settings.certificate
    return options


def _read_certificate(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OtlpSettingsError(f"cannot read certificate {path}: {exc.strerror}") from None
