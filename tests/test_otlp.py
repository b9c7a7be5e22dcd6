"""OTLP export against a real receiver (gRPC and HTTP/protobuf, official protobufs).

The same scripted probe results go to ``ProbeMetrics`` (a fresh Prometheus registry) and to
``OtlpExporter``; what the receiver decodes must carry the same values under the GenAI
names. With the collector dead or silent, recording and ``/metrics`` stay fast, memory
stays flat and failures are counted.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import statistics
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from streamobs.collectors.engines import snapshot_from_text
from streamobs.collectors.gpu.export import GpuCollector
from streamobs.collectors.gpu.names import MEMORY_TOTAL, MEMORY_USED
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.config import Config, parse_config
from streamobs.export.otlp import names
from streamobs.export.otlp.exporter import OtlpExporter, OtlpSettings, histogram_boundaries
from streamobs.export.otlp.gpu import GPU_NAMES
from streamobs.export.otlp.server_timing import NAMES as SERVER_TIMING_NAMES
from streamobs.export.otlp.settings import OtlpSettingsError, build_resource
from streamobs.export.prometheus.probe import FAILURE_OUTCOMES, ProbeMetrics
from streamobs.export.prometheus.server_timing import ServerTimingMetrics, bucket_edges
from streamobs.overhead import OverheadTracker
from streamobs.probe.result import Degraded, Delivery, Outcome, ProbeResult, TimingQuality
from streamobs.targets import TargetConfig
from streamobs.traces.records import ServerSpan, ServerTiming, server_timing
from tests.fake_nvml import FakeNvml, h100, rtx3050
from tests.fixtures import FIXTURES
from tests.otlp_receiver import (
    Received,
    black_hole,
    closed_port,
    http_receiver,
    receiver,
    wait_until,
)

MS = 1_000_000
PROTOCOLS = ("grpc", "http/protobuf")
STARTED_AT = 1_795_635_800.0

CONFIG = parse_config(
    {
        "targets": [
            {
                "name": "chat-a",
                "url": "http://127.0.0.1:8000/v1",
                "model": "tiny",
                "metrics_url": False,
                "slo": {"ttft": "300ms", "tpot": "25ms"},
            },
            {
                "name": "completions-b",
                "url": "http://127.0.0.1:8001/v1",
                "endpoint": "completions",
                "model": "small",
                "metrics_url": False,
                "slo": {"ttft": "1.5s"},
            },
        ]
    }
)
CHAT, COMPLETIONS = CONFIG.targets


def result(target: TargetConfig, outcome: Outcome, **fields: Any) -> ProbeResult:
    base: dict[str, Any] = {
        "url": target.target.request_url,
        "endpoint": target.target.endpoint,
        "model": target.model,
        "outcome": outcome,
        "start_ns": 0,
        "started_at": STARTED_AT,
    }
    return ProbeResult(**{**base, **fields})


def streamed(ttft_ms: int, gap_ms: int, tokens: int, **fields: Any) -> dict[str, Any]:
    arrivals = tuple((ttft_ms + i * gap_ms) * MS for i in range(tokens))
    return {
        "connect_ns": 1 * MS,
        "request_sent_ns": 2 * MS,
        "headers_ns": 3 * MS,
        "first_event_ns": ttft_ms * MS - 2 * MS,
        "first_token_ns": arrivals[0],
        "last_token_ns": arrivals[-1],
        "done_ns": arrivals[-1] + MS,
        "end_ns": 2 * MS + arrivals[-1] + MS,
        "token_arrivals_ns": arrivals,
        "output_tokens": tokens,
        "output_tokens_source": "usage",
        "prompt_tokens": 21,
        "content_events": tokens,
        "http_status": 200,
        "finish_reason": "length",
        "response_id": "cmpl-1",
        **fields,
    }


SCRIPTED: list[tuple[TargetConfig, ProbeResult]] = [
    (
        CHAT,
        result(
            CHAT,
            Outcome.OK,
            response_model="tiny",
            delivery=Delivery(17, 17, 1.0, 1, 0.0, False),
            **streamed(180, 20, 16),
        ),
    ),
    (
        CHAT,
        result(
            CHAT,
            Outcome.OK,
            response_model="tiny",
            delivery=Delivery(2, 1, 8.0, 8, 1.0, True),
            **streamed(2_400, 30, 8, started_at=STARTED_AT + 15),
        ),
    ),
    (CHAT, result(CHAT, Outcome.CONNECT, connect_ns=None, end_ns=5 * MS, error="refused")),
    (
        CHAT,
        result(
            CHAT, Outcome.TIMEOUT_FIRST_TOKEN, headers_ns=4 * MS, end_ns=3_000 * MS, http_status=200
        ),
    ),
    (
        COMPLETIONS,
        result(COMPLETIONS, Outcome.OK, response_model="small", **streamed(250, 12, 32)),
    ),
    (
        COMPLETIONS,
        result(COMPLETIONS, Outcome.HTTP_STATUS, headers_ns=2 * MS, end_ns=2 * MS, http_status=503),
    ),
    (
        COMPLETIONS,
        result(
            COMPLETIONS,
            Outcome.STREAM_ERROR,
            headers_ns=2 * MS,
            first_token_ns=150 * MS,
            end_ns=160 * MS,
            http_status=200,
        ),
    ),
]


# -- decoding what the receiver got --------------------------------------------------------
def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


@dataclass
class Series:
    kind: str
    unit: str
    attributes: dict[str, Any]
    point: Any

    @property
    def value(self) -> float:
        return float(getattr(self.point, self.point.WhichOneof("value")))


def decode(request: ExportMetricsServiceRequest) -> tuple[dict[str, Any], dict[str, list[Series]]]:
    resource: dict[str, Any] = {}
    found: dict[str, list[Series]] = {}
    for rm in request.resource_metrics:
        resource.update(attributes(rm.resource.attributes))
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    found.setdefault(metric.name, []).append(
                        Series(kind, metric.unit, attributes(point.attributes), point)
                    )
    return resource, found


def select(series: list[Series], **wanted: Any) -> list[Series]:
    keys = {k.replace("__", "."): v for k, v in wanted.items()}
    return [s for s in series if all(s.attributes.get(k) == v for k, v in keys.items())]


def of(target: TargetConfig) -> dict[str, Any]:
    return {"streamobs__target": target.name, "gen_ai__request__model": target.model}


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_") or key in ("KUBERNETES_SERVICE_HOST", "POD_NAME"):
            monkeypatch.delenv(key)


def exporter_for(
    endpoint: str, protocol: str, config: Config = CONFIG, **overrides: Any
) -> tuple[OtlpExporter, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = OtlpSettings(
        enabled=True,
        protocol=protocol,  # type: ignore[arg-type]
        endpoint=endpoint,
        export_interval=overrides.pop("export_interval", 60.0),
        timeout=overrides.pop("timeout", 5.0),
        **overrides,
    )
    return OtlpExporter(settings, config.targets, config.latency_buckets(), registry), registry


@pytest.fixture(params=PROTOCOLS)
def exported(
    request: pytest.FixtureRequest, clean_env: None
) -> Iterator[tuple[str, Received, CollectorRegistry]]:
    """Both sides after recording SCRIPTED: (protocol, receiver, Prometheus registry)."""
    protocol = request.param
    with receiver(protocol) as (endpoint, received):
        exporter, _ = exporter_for(endpoint, protocol, traces=True)
        prometheus = CollectorRegistry()
        metrics = ProbeMetrics(prometheus)
        metrics.configure(CONFIG.targets, CONFIG.latency_buckets())
        for target, scripted in SCRIPTED:
            metrics.record(target.name, scripted)
            exporter.record_probe(target, scripted)
        assert exporter.force_flush(10)
        assert received.wait_for(lambda: bool(received.metrics) and bool(received.traces))
        exporter.shutdown(2)
        yield protocol, received, prometheus


# -- same values as Prometheus -------------------------------------------------------------
def prom(registry: CollectorRegistry, name: str, target: TargetConfig, **labels: str) -> float:
    value = registry.get_sample_value(
        name, {"target": target.name, "model": target.model or "", **labels}
    )
    assert value is not None, (name, target.name, labels)
    return value


def assert_histogram_matches(
    registry: CollectorRegistry, kind: str, points: list[Series], target: TargetConfig
) -> None:
    """Count and sum equal, and the cumulative count at every edge both sides have."""
    prom_name = f"streamobs_probe_{kind}_seconds"
    count = prom(registry, prom_name + "_count", target)
    total = prom(registry, prom_name + "_sum", target)
    assert sum(p.point.count for p in points) == count
    assert math.isclose(sum(p.point.sum for p in points), total, abs_tol=1e-9)
    edges = set(CONFIG.latency_buckets()[kind])
    for point in points:
        bounds = list(point.point.explicit_bounds)
        cumulative = 0
        for bound, in_bucket in zip(bounds, point.point.bucket_counts, strict=False):
            cumulative += in_bucket
            if bound in edges:
                le = floatToGoString(bound)  # type: ignore[no-untyped-call]
                expected = prom(registry, prom_name + "_bucket", target, le=le)
                assert cumulative == expected, (prom_name, target.name, bound)


def test_metrics_match_prometheus(exported: tuple[str, Received, CollectorRegistry]) -> None:
    _, received, registry = exported
    resource, found = decode(received.metrics[-1])
    assert resource["service.name"] == "streamobs"
    assert resource["service.version"]
    boundaries = histogram_boundaries(CONFIG.targets, CONFIG.latency_buckets())
    for target in CONFIG.targets:
        ok = {**of(target), "error__type": None}
        pairs = (
            ("ttft", names.TIME_TO_FIRST_CHUNK),
            ("e2e", names.OPERATION_DURATION),
            ("itl", names.TIME_PER_OUTPUT_CHUNK),
            ("tpot", names.PROBE_TPOT),
            ("headers", names.PROBE_HEADERS),
        )
        for kind, otlp_name in pairs:
            points = select(found[otlp_name], **ok)
            assert points, (otlp_name, target.name)
            assert_histogram_matches(registry, kind, points, target)
            for point in points:
                assert tuple(point.point.explicit_bounds) == boundaries[otlp_name]
        assert select(found[names.PROBE_ATTEMPTS], **of(target))[0].value == prom(
            registry, "streamobs_probe_attempts_total", target
        )
        assert select(found[names.PROBE_BUFFERED], **of(target))[0].value == prom(
            registry, "streamobs_probe_buffered_total", target
        )
        for outcome in FAILURE_OUTCOMES:
            failures = select(found[names.PROBE_FAILURES], **of(target), error__type=outcome)
            expected = prom(registry, "streamobs_probe_failures_total", target, outcome=outcome)
            assert failures[0].value == expected, outcome
            durations = select(found[names.OPERATION_DURATION], **of(target), error__type=outcome)
            assert sum(p.point.count for p in durations) == expected, outcome
        output = select(found[names.TOKEN_USAGE], **of(target), gen_ai__token__type="output")
        assert sum(p.point.sum for p in output) == prom(
            registry, "streamobs_probe_output_tokens_total", target
        )
        for otlp_name, prom_name in (
            (names.PROBE_SUCCESS, "streamobs_probe_success"),
            (names.PROBE_BURST_SHARE, "streamobs_probe_burst_share_ratio"),
            (names.PROBE_LAST_RUN, "streamobs_probe_last_run_timestamp_seconds"),
        ):
            assert select(found[otlp_name], **of(target))[0].value == prom(
                registry, prom_name, target
            )
        for otlp_name, prom_name in (
            (names.SLO_TTFT, "streamobs_slo_ttft_threshold_seconds"),
            (names.SLO_TPOT, "streamobs_slo_tpot_threshold_seconds"),
            (names.SLO_OBJECTIVE, "streamobs_slo_objective_ratio"),
        ):
            point = select(found[otlp_name], streamobs__target=target.name)[0]
            assert point.value == registry.get_sample_value(prom_name, {"target": target.name})


def test_names_units_attributes_and_boundaries(
    exported: tuple[str, Received, CollectorRegistry],
) -> None:
    _, received, _ = exported
    _, found = decode(received.metrics[-1])
    units = {
        names.OPERATION_DURATION: "s",
        names.TIME_TO_FIRST_CHUNK: "s",
        names.TIME_PER_OUTPUT_CHUNK: "s",
        names.TOKEN_USAGE: "{token}",
        names.PROBE_TPOT: "s",
        names.PROBE_HEADERS: "s",
        names.PROBE_ATTEMPTS: "{probe}",
        names.PROBE_FAILURES: "{probe}",
        names.PROBE_SUCCESS: "1",
        names.SLO_TTFT: "s",
    }
    for name, unit in units.items():
        assert {s.unit for s in found[name]} == {unit}, name
    for name in (names.OPERATION_DURATION, names.TIME_TO_FIRST_CHUNK, names.TOKEN_USAGE):
        for series in found[name]:
            assert series.kind == "histogram"
            attrs = series.attributes
            assert attrs["gen_ai.provider.name"] == "vllm"
            assert attrs["server.address"] == "127.0.0.1"
            assert attrs["server.port"] in (8000, 8001)
            target = CHAT if attrs["streamobs.target"] == "chat-a" else COMPLETIONS
            operation = "chat" if target is CHAT else "text_completion"
            assert attrs["gen_ai.operation.name"] == operation
            assert attrs["gen_ai.request.model"] == target.model
            if "error.type" not in attrs:
                assert attrs["gen_ai.response.model"] == target.model
    errors = {s.attributes.get("error.type") for s in found[names.OPERATION_DURATION]}
    assert errors == {None, "connect", "timeout_first_token", "http_status", "stream_error"}
    token_types = {s.attributes["gen_ai.token.type"] for s in found[names.TOKEN_USAGE]}
    assert token_types == {"input", "output"}
    # Every SLO threshold is an edge of the GenAI histograms, beside the convention's.
    ttft_bounds = set(found[names.TIME_TO_FIRST_CHUNK][0].point.explicit_bounds)
    assert {0.3, 1.5} <= ttft_bounds and set(names.DURATION_BOUNDARIES) <= ttft_bounds
    chunk_bounds = set(found[names.TIME_PER_OUTPUT_CHUNK][0].point.explicit_bounds)
    assert {0.025, 0.1} <= chunk_bounds
    tokens = found[names.TOKEN_USAGE][0].point.explicit_bounds
    assert tuple(tokens) == names.TOKEN_BOUNDARIES


def test_one_span_per_probe_with_phase_events(
    exported: tuple[str, Received, CollectorRegistry],
) -> None:
    _, received, _ = exported
    spans = [
        span
        for request in received.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert len(spans) == len(SCRIPTED)
    by_start: dict[tuple[str, int], Any] = {}
    for span in spans:
        attrs = attributes(span.attributes)
        by_start[(attrs["streamobs.target"], span.end_time_unix_nano)] = (span, attrs)
    for target, scripted in SCRIPTED:
        start = round(scripted.started_at * 1e9)
        span, attrs = by_start[(target.name, start + scripted.end_ns)]
        assert span.start_time_unix_nano == start
        assert span.kind == span.SPAN_KIND_CLIENT
        assert span.name == f"{attrs['gen_ai.operation.name']} {target.model}"
        assert attrs["gen_ai.request.stream"] is True
        events = {e.name: e.time_unix_nano for e in span.events}
        # Connection phases follow one another from the start; the rest counts from
        # the request's last byte leaving (request_sent).
        sent = start + (scripted.request_sent_ns or 0)
        if scripted.request_sent_ns is not None:
            assert events["streamobs.probe.request_sent"] == sent
        if scripted.headers_ns is not None and scripted.request_sent_ns is not None:
            assert events["streamobs.probe.headers"] == sent + scripted.headers_ns
        if scripted.ok:
            first, done, connect = scripted.first_token_ns, scripted.done_ns, scripted.connect_ns
            assert first is not None and done is not None and connect is not None
            assert span.status.code == span.status.STATUS_CODE_UNSET
            assert attrs["gen_ai.response.time_to_first_chunk"] == first / 1e9
            assert events["streamobs.probe.first_token"] == sent + first
            assert events["streamobs.probe.done"] == sent + done
            assert events["streamobs.probe.connect"] == start + (scripted.dns_ns or 0) + connect
        else:
            assert span.status.code == span.status.STATUS_CODE_ERROR
            assert attrs["error.type"] == scripted.outcome.value


# -- configuration --------------------------------------------------------------------------
def test_otel_variables_configure_the_sdk(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the settings: endpoint, protocol, headers, compression and interval come
    from OTEL_* as the SDK reads them, and an endpoint variable turns export on."""
    with receiver("http/protobuf") as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "probe-fleet")
        exporter = OtlpExporter(OtlpSettings(), CONFIG.targets, CONFIG.latency_buckets())
        try:
            assert exporter.signals == ("metrics",)
            exporter.record_probe(*SCRIPTED[0])
            assert received.wait_for(lambda: len(received.metrics) >= 2, timeout=5)
        finally:
            exporter.shutdown(2)
    assert received.headers[0]["x-tenant"] == "acme"
    assert received.headers[0]["content-encoding"] == "gzip"
    resource, _ = decode(received.metrics[0])
    assert resource["service.name"] == "probe-fleet"


def test_settings_win_over_variables(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", closed_port())
    with receiver("grpc") as (endpoint, received):
        exporter, _ = exporter_for(
            endpoint,
            "grpc",
            headers={"X-Tenant": "acme"},
            compression="gzip",
            service_name="edge",
            provider_name="sglang",
        )
        try:
            exporter.record_probe(*SCRIPTED[0])
            assert exporter.force_flush(5)
        finally:
            exporter.shutdown(2)
    assert received.headers[-1]["x-tenant"] == "acme"
    resource, found = decode(received.metrics[-1])
    assert resource["service.name"] == "edge"
    assert found[names.TIME_TO_FIRST_CHUNK][0].attributes["gen_ai.provider.name"] == "sglang"


def test_disabled_without_settings_or_variables(clean_env: None) -> None:
    registry = CollectorRegistry()
    exporter = OtlpExporter(OtlpSettings(), CONFIG.targets, CONFIG.latency_buckets(), registry)
    assert not exporter.enabled and exporter.signals == ()
    exporter.record_probe(*SCRIPTED[0])
    exporter.shutdown()
    assert generate_latest(registry) == b""  # no OTLP series on /metrics while it is off


def test_bad_protocol_variable_is_a_precise_error(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
    with pytest.raises(OtlpSettingsError, match="http/json"):
        OtlpExporter(OtlpSettings(enabled=True), CONFIG.targets, CONFIG.latency_buckets())


def test_resource_from_variables_and_kubernetes(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=ml")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("POD_NAME", "vllm-0")
    monkeypatch.setenv("POD_NAMESPACE", "inference")
    monkeypatch.setenv("NODE_NAME", "gpu-node-3")
    attrs = dict(build_resource(OtlpSettings()).attributes)
    assert attrs["service.name"] == "streamobs"
    assert attrs["deployment.environment.name"] == "prod" and attrs["team"] == "ml"
    assert attrs["k8s.pod.name"] == "vllm-0"
    assert attrs["k8s.namespace.name"] == "inference"
    assert attrs["k8s.node.name"] == "gpu-node-3"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert "k8s.pod.name" not in build_resource(OtlpSettings()).attributes
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    assert build_resource(OtlpSettings()).attributes["service.name"] == "from-env"
    named = build_resource(OtlpSettings(service_name="from-config"))
    assert named.attributes["service.name"] == "from-config"


# -- collectors, overhead and the cardinality cap --------------------------------------------
def test_vllm_and_overhead_series(clean_env: None) -> None:
    snapshot = snapshot_from_text((FIXTURES / "metrics.txt").read_text())
    assert snapshot.up
    tracker = OverheadTracker()
    window = "\n".join(
        [
            "# TYPE vllm:time_to_first_token_seconds histogram",
            'vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="tiny"}} {n}',
            'vllm:time_to_first_token_seconds_count{{engine="0",model_name="tiny"}} {n}',
            'vllm:time_to_first_token_seconds_sum{{engine="0",model_name="tiny"}} {s}',
            "",
        ]
    )
    tracker.record_snapshot(CHAT.name, snapshot_from_text(window.format(n=1, s=0.1)))
    tracker.record_probe(CHAT, SCRIPTED[0][1])  # client TTFT 0.18 s
    tracker.record_snapshot(CHAT.name, snapshot_from_text(window.format(n=2, s=0.25)))
    with receiver("grpc") as (endpoint, received):
        exporter, _ = exporter_for(endpoint, "grpc")
        exporter.observe_vllm(lambda: {"chat-a": snapshot}, ["chat-a", "completions-b"])
        exporter.observe_overhead(tracker)
        try:
            assert exporter.force_flush(5)
        finally:
            exporter.shutdown(2)
    _, found = decode(received.metrics[-1])
    up = {s.attributes["streamobs.target"]: s.value for s in found["streamobs.collector.up"]}
    assert up == {"chat-a": 1.0, "completions-b": 0.0}
    for family in snapshot.normalised:
        short = family.spec.name.removeprefix("streamobs_engine_")
        name = "streamobs.engine." + short.removesuffix("_total").removesuffix(
            "_seconds"
        ).removesuffix("_ratio")
        assert name in found, name
        for scalar in family.scalars:
            match = select(found[name], gen_ai__request__model=scalar.labels[0])
            assert any(s.value == scalar.value for s in match), name
        for histogram in family.histograms:
            point = select(found[name], gen_ai__request__model=histogram.labels[0])[0].point
            assert point.count == histogram.count and point.sum == histogram.sum
            finite = [b for b, _ in histogram.buckets if not math.isinf(b)]
            assert list(point.explicit_bounds) == finite
            cumulative = [sum(point.bucket_counts[: i + 1]) for i in range(len(finite))]
            assert cumulative == [c for b, c in histogram.buckets if not math.isinf(b)]
    overhead = found[names.PROBE_TTFT_OVERHEAD][0]
    assert overhead.attributes == {"streamobs.target": "chat-a", "gen_ai.request.model": "tiny"}
    assert math.isclose(overhead.value, 0.18 - 0.15, abs_tol=1e-9)


def joined(result: ProbeResult, path_ms: float, queue: float) -> ServerTiming:
    """``result`` joined to its own span, whose TTFT is ``path_ms`` below the client's
    (above it when negative)."""
    assert result.first_token_ns is not None
    ttft = result.first_token_ns / 1e9 - path_ms / 1000
    span = ServerSpan(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="ef" * 8,
        start_unix_ns=0,
        end_unix_ns=int((ttft + 0.3) * 1e9),
        queue_seconds=queue,
        ttft_seconds=ttft,
        prefill_seconds=ttft * 0.4,
        decode_seconds=0.3,
        e2e_seconds=ttft + 0.3,
    )
    return server_timing(result.first_token_ns, span)


# Every scripted probe that got a first token, with three spans each; the failed ones
# count on neither side, nor does one with degraded stamps.
SERVER_TIMED = [
    (target, scripted, joined(scripted, path_ms, queue))
    for target, scripted in SCRIPTED
    if scripted.first_token_ns is not None
    for path_ms, queue in ((3.5, 0.000061), (0.00002, 0.0), (-0.004, 0.31))
]
SERVER_TIMED.append(
    (
        CHAT,
        replace(SCRIPTED[0][1], timing=TimingQuality(degraded=Degraded.LATE_READS)),
        joined(SCRIPTED[0][1], 1.0, 0.5),
    )
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_timing_matches_prometheus(clean_env: None, protocol: str) -> None:
    """Each probe's own server timing: the same histograms as on /metrics (the failed and
    degraded probes on neither side), names, unit, attributes and edges."""
    prometheus = CollectorRegistry()
    metrics = ServerTimingMetrics(prometheus, CONFIG.latency_buckets())
    with receiver(protocol) as (endpoint, received):
        exporter, _ = exporter_for(endpoint, protocol)
        try:
            for target, scripted, timing in SERVER_TIMED:
                metrics.record(target.name, scripted, timing)
                exporter.record_server_timing(target, scripted, timing)
            assert exporter.force_flush(10)
            assert received.wait_for(lambda: bool(received.metrics))
        finally:
            exporter.shutdown(2)
    _, found = decode(received.metrics[-1])
    edges = bucket_edges(CONFIG.latency_buckets())
    boundaries = histogram_boundaries(CONFIG.targets, CONFIG.latency_buckets())
    recorded = [(t, r, s) for t, r, s in SERVER_TIMED if r.ok and r.exact]
    assert any(s.path_seconds is not None and s.path_seconds < 0 for _, _, s in recorded)
    for suffix, name in SERVER_TIMING_NAMES.items():
        assert name.startswith("streamobs.probe.")
        prom_name = (
            "streamobs_probe_path_seconds"
            if suffix == "path"
            else (f"streamobs_probe_server_{suffix}_seconds")
        )
        series = found[name]
        assert {s.kind for s in series} == {"histogram"} and {s.unit for s in series} == {"s"}
        assert {frozenset(s.attributes) for s in series} == {
            frozenset({"streamobs.target", "gen_ai.request.model"})
        }
        for target in CONFIG.targets:
            points = select(series, **of(target))
            assert len(points) == 1, (name, target.name)
            point = points[0].point
            assert tuple(point.explicit_bounds) == edges[suffix] == boundaries[name]
            count = prom(prometheus, prom_name + "_count", target)
            assert point.count == count == sum(1 for t, *_ in recorded if t is target)
            # Cumulative counts at every edge, as Prometheus has them.
            cumulative = 0
            for bound, in_bucket in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                cumulative += in_bucket
                le = floatToGoString(bound)  # type: ignore[no-untyped-call]
                assert cumulative == prom(prometheus, prom_name + "_bucket", target, le=le)
            if suffix == "path":  # below zero: 0 over OTLP (the SDK refuses negatives)
                paths = [s.path_seconds or 0.0 for t, _, s in recorded if t is target]
                assert math.isclose(point.sum, sum(max(p, 0.0) for p in paths), abs_tol=1e-12)
                assert math.isclose(
                    prom(prometheus, prom_name + "_sum", target), sum(paths), abs_tol=1e-12
                )
            else:
                total = prom(prometheus, prom_name + "_sum", target)
                assert math.isclose(point.sum, total, rel_tol=1e-12)


def test_server_timing_is_not_recorded_while_export_is_off(clean_env: None) -> None:
    exporter = OtlpExporter(
        OtlpSettings(), CONFIG.targets, CONFIG.latency_buckets(), CollectorRegistry()
    )
    assert not exporter.enabled
    target, scripted, timing = SERVER_TIMED[0]
    exporter.record_server_timing(target, scripted, timing)  # nothing to do, no error


def test_gpu_series_match_prometheus(clean_env: None) -> None:
    """Two fake GPUs sampled once: every Prometheus GPU sample is in OTLP with its value,
    under hw.* where a convention exists; collector health is shared with vLLM's."""
    sampler = GpuSampler(
        nvml=FakeNvml([h100(), rtx3050()]), read_cmdline={4242: "vllm serve m"}.get
    )
    snapshot = sampler.sample()
    assert snapshot.up
    prometheus = CollectorRegistry()
    prometheus.register(GpuCollector(lambda: snapshot))
    with receiver("http/protobuf") as (endpoint, received):
        exporter, _ = exporter_for(endpoint, "http/protobuf")
        exporter.observe_vllm(lambda: {}, {"chat-a": "vllm"})  # scraped never: reported down
        exporter.observe_gpu(lambda: snapshot)
        try:
            assert exporter.force_flush(5)
        finally:
            exporter.shutdown(2)
    _, found = decode(received.metrics[-1])
    compared = 0
    for family in prometheus.collect():
        for sample in family.samples:
            if sample.name.startswith("streamobs_collector"):
                continue
            device = next(d for d in snapshot.devices if d.uuid == sample.labels["uuid"])
            candidates = select(found[GPU_NAMES[sample.name]], hw__id=device.uuid)
            assert any(math.isclose(s.value, sample.value) for s in candidates), sample
            compared += 1
    assert compared > 20
    power = found["hw.power"][0].attributes
    assert power["hw.type"] == "gpu" and power["hw.name"] and power["streamobs.gpu.index"] in (0, 1)
    assert {s.unit for s in found["hw.gpu.memory.usage"]} == {"By"}
    for series in found["hw.gpu.memory.utilization"]:
        device = next(d for d in snapshot.devices if d.uuid == series.attributes["hw.id"])
        used, total = device.value(MEMORY_USED), device.value(MEMORY_TOTAL)
        assert used is not None and total is not None
        assert math.isclose(series.value, used / total)
    health = {
        s.attributes.get("streamobs.collector") + "/" + str(s.attributes.get("streamobs.target"))
        for s in found["streamobs.collector.up"]
    }
    assert health == {"gpu/None", "vllm/chat-a"}


def test_cardinality_cap_drops_and_counts(clean_env: None) -> None:
    with receiver("grpc") as (endpoint, received):
        exporter, registry = exporter_for(endpoint, "grpc", max_series_per_instrument=3)
        try:
            for i in range(6):
                target, scripted = SCRIPTED[0]
                exporter.record_probe(target, replace(scripted, model=f"model-{i}"))
            assert exporter.force_flush(5)
        finally:
            exporter.shutdown(2)
    _, found = decode(received.metrics[-1])
    for name in (names.PROBE_ATTEMPTS, names.TIME_TO_FIRST_CHUNK, names.PROBE_SUCCESS):
        assert len(found[name]) <= 3, name
    dropped = registry.get_sample_value(
        "streamobs_otlp_dropped_series_total", {"instrument": names.TIME_TO_FIRST_CHUNK}
    )
    assert dropped == 3


# -- a dead or silent collector -----------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def grew(samples: list[int]) -> int:
    """Median of the later half minus median of the earlier half."""
    half = len(samples) // 2
    return int(statistics.median(samples[half:]) - statistics.median(samples[:half]))


@dataclass
class Outage:
    """What a stream of probes cost while the collector was unreachable."""

    record_seconds: list[float]
    render_seconds: list[float]
    rss: list[int]
    traced: list[int]


def probe_through_outage(exporter: OtlpExporter, registry: CollectorRegistry) -> Outage:
    """Record a probe every few ms for 5.5 s. After a 1 s warm-up: 1.5 s timing recording
    and /metrics rendering (and RSS); then tracemalloc, which would distort both, samples
    from 3 s on (its first half second only fills it with the objects already turning
    over). Memory is sampled after a collection: live memory, not garbage."""
    metrics = ProbeMetrics(registry)
    metrics.configure(CONFIG.targets, CONFIG.latency_buckets())
    outage = Outage([], [], [], [])
    started = time.monotonic()
    next_sample = started + 1.0
    i = 0
    try:
        while (elapsed := time.monotonic() - started) < 5.5:
            target, scripted = SCRIPTED[i % len(SCRIPTED)]
            i += 1
            metrics.record(target.name, scripted)
            t0 = time.perf_counter()
            exporter.record_probe(target, scripted)
            timing = 1.0 <= elapsed < 2.5
            if timing:
                outage.record_seconds.append(time.perf_counter() - t0)
            elif elapsed >= 2.5 and not tracemalloc.is_tracing():
                tracemalloc.start()
            if time.monotonic() >= next_sample:
                next_sample += 0.2
                if timing:
                    t0 = time.perf_counter()
                    generate_latest(registry)
                    outage.render_seconds.append(time.perf_counter() - t0)
                gc.collect()
                if timing:
                    outage.rss.append(rss_bytes())
                elif elapsed >= 3.0:
                    outage.traced.append(tracemalloc.get_traced_memory()[0])
            time.sleep(0.004)
    finally:
        tracemalloc.stop()
    return outage


@pytest.mark.parametrize(
    ("protocol", "silent"),
    [("grpc", False), ("grpc", True), ("http/protobuf", False), ("http/protobuf", True)],
    ids=["grpc-refused", "grpc-silent", "http-refused", "http-silent"],
)
def test_dead_collector_costs_nothing(
    protocol: str, silent: bool, clean_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with black_hole() as hole:
        exporter, registry = exporter_for(
            hole if silent else closed_port(),
            protocol,
            export_interval=0.1,
            timeout=0.3,
            traces=True,
            span_queue_size=16,
        )
        try:
            outage = probe_through_outage(exporter, registry)
        finally:
            t0 = time.perf_counter()
            exporter.shutdown(1.0)
            shutdown_seconds = time.perf_counter() - t0
    failures = registry.get_sample_value(
        "streamobs_otlp_export_failures_total", {"signal": "metrics"}
    )
    assert failures is not None and failures >= 5, failures
    span_failures = registry.get_sample_value(
        "streamobs_otlp_export_failures_total", {"signal": "traces"}
    )
    assert span_failures is not None and span_failures >= 1
    # Recording never waits for the network: far below one export timeout (0.3 s).
    assert statistics.median(outage.record_seconds) < 0.002
    assert max(outage.record_seconds) < 0.1, max(outage.record_seconds)
    # /metrics renders in its usual few milliseconds.
    assert statistics.median(outage.render_seconds) < 0.01, outage.render_seconds
    assert max(outage.render_seconds) < 0.05, outage.render_seconds
    assert shutdown_seconds < 2.0, shutdown_seconds
    assert grew(outage.rss) < 4 * 1024 * 1024, outage.rss
    assert grew(outage.traced) < 256 * 1024, outage.traced
    # One line when exporting starts failing, none per attempt.
    failing = [r.getMessage() for r in caplog.records if "failing (counted" in r.getMessage()]
    assert len(failing) == 2, failing
    sdk = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING
    ]
    assert len(sdk) <= 1, sdk  # a full span queue, said once


def test_recovery_is_logged_once_and_failures_stop(
    clean_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    endpoint = closed_port()
    exporter, registry = exporter_for(endpoint, "http/protobuf", export_interval=0.1, timeout=0.3)

    def failures() -> float:
        value = registry.get_sample_value(
            "streamobs_otlp_export_failures_total", {"signal": "metrics"}
        )
        return value or 0.0

    exporter.record_probe(*SCRIPTED[0])
    try:
        assert wait_until(lambda: failures() >= 3, timeout=5)
        with http_receiver(int(endpoint.rsplit(":", 1)[1])) as (_, received):
            assert received.wait_for(lambda: len(received.metrics) >= 3, timeout=5)
            settled = failures()
            assert received.wait_for(lambda: len(received.metrics) >= 6, timeout=5)
            assert failures() == settled
            exporter.shutdown(1)  # while the collector is still there
    finally:
        exporter.shutdown(1)
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("otlp.health")]
    assert len([m for m in messages if "failing" in m]) == 1, messages
    assert len([m for m in messages if "works again" in m]) == 1, messages
