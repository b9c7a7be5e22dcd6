"""The series of one on-demand probe, for ``/probe?target=...`` (blackbox_exporter style)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from streamobs.probe.result import Outcome, ProbeResult


def probe_registry(result: ProbeResult) -> CollectorRegistry:
    """A fresh registry holding only this probe's outcome and phases (seconds)."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        metric = Gauge(name, doc, tuple(labels), registry=registry)
        (metric.labels(**labels) if labels else metric).set(value)

    gauge("streamobs_probe_success", "1 if the probe succeeded.", 1 if result.ok else 0)
    gauge("streamobs_probe_duration_seconds", "How long the probe took.", result.end_ns / 1e9)
    outcome = Gauge(
        "streamobs_probe_outcome", "1 for the outcome class of this probe.", ("outcome",),
        registry=registry,
    )  # fmt: skip
    for member in Outcome:
        outcome.labels(member.value).set(1 if member is result.outcome else 0)
    phases = Gauge(
        "streamobs_probe_phase_seconds",
        "Duration of each connection phase (dns, connect, tls), and time from the request's "
        "last byte leaving to each later phase the probe reached.",
        ("phase",),
        registry=registry,
    )
    for phase, ns in (
        ("dns", result.dns_ns),
        ("connect", result.connect_ns),
        ("tls", result.tls_ns),
        ("headers", result.headers_ns),
        ("first_event", result.first_event_ns),
        ("first_token", result.first_token_ns),
        ("last_token", result.last_token_ns),
        ("done", result.done_ns),
    ):
        if ns is not None:
            phases.labels(phase).set(ns / 1e9)
    tpot = result.tpot_ns
    gauge(
        "streamobs_probe_tpot_seconds",
        "Time per output token.",
        None if tpot is None else tpot / 1e9,
    )
    gauge("streamobs_probe_output_tokens", "Output tokens received.", result.output_tokens)
    gauge(
        "streamobs_probe_timing_exact",
        "1 if the probe's own stamps are exact, 0 if degraded (streamobs read too late).",
        1 if result.exact else 0,
    )
    gauge("streamobs_probe_http_status_code", "HTTP status of the response.", result.http_status)
    if result.delivery is not None:
        gauge(
            "streamobs_probe_buffered",
            "1 if the tokens arrived in bursts.",
            1 if result.delivery.buffered else 0,
        )
        gauge(
            "streamobs_probe_burst_share_ratio",
            "Share of tokens that arrived in bursts.",
            result.delivery.burst_share,
        )
    return registry
