"""`streamobs run` with the trace receiver: the simulator sends each request's llm_request
span to the daemon, every probe gets its own server figures (exactly the simulator's),
path time is client TTFT minus server TTFT, the same figures go out as OTLP histograms,
every received body goes on to the user's OTLP endpoint unchanged under the probe's own
span, and a dead downstream changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from streamobs.config import parse_config
from streamobs.daemon import Daemon
from streamobs.export.otlp import names
from streamobs.probe.result import ProbeResult
from streamobs.simulator import Simulator, SimulatorConfig
from streamobs.traces.records import ServerTiming
from tests.fixtures import free_port, wait_for
from tests.otlp_receiver import black_hole, http_receiver
from tests.test_otlp import decode
from tests.test_traces_receiver import raw_http_receiver

Joined = tuple[str, ProbeResult, ServerTiming, bool]


def daemon_config(sim: Simulator, port: int, otlp_endpoint: str, **otlp: Any) -> dict[str, Any]:
    return {
        "web": {"listen_address": "127.0.0.1:0"},
        "shutdown_grace": "3s",
        "targets": [{"name": "sim", "url": sim.url, "interval": "150ms", "max_tokens": 6}],
        "collectors": {"gpu": {"enabled": False}},
        "traces_receiver": {"http_listen_address": f"127.0.0.1:{port}", "join_wait": "30s"},
        "otlp": {
            "enabled": True,
            "protocol": "http/protobuf",
            "endpoint": otlp_endpoint,
            "traces": True,
            "export_interval": "1s",
            **otlp,
        },
    }


@contextmanager
def traced_daemon(config: dict[str, Any]) -> Iterator[tuple[Daemon, list[Joined]]]:
    daemon = Daemon(parse_config(config))
    timing = daemon.runtime.server_timing
    assert timing is not None
    joined: list[Joined] = []
    lock = threading.Lock()
    record = timing.record

    def spy(target: str, result: ProbeResult, server: ServerTiming) -> bool:
        observed = record(target, result, server)
        with lock:
            joined.append((target, result, server, observed))
        return observed

    timing.record = spy  # type: ignore[method-assign]
    daemon.start()
    try:
        yield daemon, joined
    finally:
        daemon.stop()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def decoded(body: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return message


def test_each_probe_gets_its_own_server_timing_and_spans_go_on_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # streamobs' own spans, soon
    port = free_port()
    sim_config = SimulatorConfig(
        model="sim",
        ttft=0.04,
        itl=0.004,
        queue=0.015,
        otlp_traces_endpoint=f"http://127.0.0.1:{port}/v1/traces",
        otlp_traces_batch_delay=0.3,
    )
    with (
        Simulator(sim_config) as sim,
        raw_http_receiver() as (downstream_url, downstream),
        traced_daemon(daemon_config(sim, port, downstream_url)) as (daemon, joined),
    ):
        wait_for(lambda: sum(1 for *_, observed in joined if observed) >= 4, timeout=60)
        for target, result, timing, observed in list(joined):
            assert target == "sim"
            assert result.trace_id is not None and result.request_id is not None
            record = sim.request_log("chatcmpl-" + result.request_id)
            assert record is not None and record.span_attributes is not None
            sent = record.span_attributes
            span = timing.span
            # The span of this very request: the simulator's own figures, exactly.
            assert span.trace_id == result.trace_id
            assert span.parent_span_id == result.span_id
            assert span.request_id == "chatcmpl-" + result.request_id
            assert span.ttft_seconds == sent["gen_ai.latency.time_to_first_token"]
            assert span.queue_seconds == sent["gen_ai.latency.time_in_queue"]
            assert span.prefill_seconds == sent["gen_ai.latency.time_in_model_prefill"]
            assert span.decode_seconds == sent["gen_ai.latency.time_in_model_decode"]
            assert span.e2e_seconds == sent["gen_ai.latency.e2e"]
            assert span.completion_tokens == result.output_tokens == 6
            assert span.queue_seconds is not None and span.queue_seconds >= 0.015
            # Path time: client TTFT - server TTFT of the same request.
            assert result.first_token_ns is not None and span.ttft_seconds is not None
            assert timing.path_seconds == result.first_token_ns / 1e9 - span.ttft_seconds
            assert observed == (result.ok and result.exact)
        # Stop probing, so /metrics and the joins we saw describe the same probes.
        daemon.runtime.scheduler.stop(5.0)
        traces = daemon.runtime.traces
        assert traces is not None
        wait_for(lambda: traces.join.pending() == 0, timeout=60)
        # Every span matched has been recorded (a match is counted just before).
        wait_for(lambda: len(joined) == traces.stats().join.joined, timeout=60)
        metrics = daemon.runtime.render().decode()
        observed_ones = [t for *_, t, o in joined if o]
        labels = '{model="sim",target="sim"}'
        for name, field in (
            ("streamobs_probe_server_ttft_seconds", "ttft_seconds"),
            ("streamobs_probe_server_queue_seconds", "queue_seconds"),
            ("streamobs_probe_server_prefill_seconds", "prefill_seconds"),
            ("streamobs_probe_server_decode_seconds", "decode_seconds"),
            ("streamobs_probe_server_e2e_seconds", "e2e_seconds"),
        ):
            assert sample(metrics, f"{name}_count{labels}") == len(observed_ones)
            total = sum(getattr(t.span, field) for t in observed_ones)
            assert sample(metrics, f"{name}_sum{labels}") == pytest.approx(total, rel=1e-9)
        paths = sum(t.path_seconds or 0.0 for t in observed_ones)
        assert sample(metrics, f"streamobs_probe_path_seconds_count{labels}") == len(observed_ones)
        assert sample(metrics, f"streamobs_probe_path_seconds_sum{labels}") == pytest.approx(
            paths, rel=1e-9
        )
        assert sample(metrics, "streamobs_traces_spans_joined_total") >= len(joined)

        # Forwarded unchanged: every body the simulator's export had accepted reached the
        # downstream byte for byte.
        sim.flush_spans()

        def forwarded() -> bool:
            with downstream.lock:
                bodies = set(downstream.bodies)
            return bool(sim.sent_span_bodies()) and set(sim.sent_span_bodies()) <= bodies

        wait_for(forwarded, timeout=60)

        # The probe's own span (streamobs' export, same backend) is the parent of vLLM's.
        def probe_spans() -> dict[tuple[str, str], str]:
            with downstream.lock:
                bodies = list(downstream.bodies)
            found: dict[tuple[str, str], str] = {}
            for body in bodies:
                for resource in decoded(body).resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            found[(span.trace_id.hex(), span.span_id.hex())] = span.name
            return found

        wanted = {(r.trace_id, r.span_id) for _, r, *_ in joined}
        wait_for(lambda: wanted <= set(probe_spans()), timeout=60)
        assert all(probe_spans()[key].startswith("chat ") for key in wanted)


def test_each_probes_server_timing_goes_out_over_otlp_too() -> None:
    port = free_port()
    sim_config = SimulatorConfig(
        model="sim",
        ttft=0.03,
        itl=0.003,
        queue=0.01,
        otlp_traces_endpoint=f"http://127.0.0.1:{port}/v1/traces",
        otlp_traces_batch_delay=0.2,
    )
    with Simulator(sim_config) as sim, http_receiver() as (endpoint, received):
        config = daemon_config(sim, port, endpoint, traces=False, export_interval="500ms")
        with traced_daemon(config) as (daemon, joined):
            wait_for(lambda: sum(1 for *_, observed in joined if observed) >= 3, timeout=60)
            daemon.runtime.scheduler.stop(5.0)
            traces, otlp = daemon.runtime.traces, daemon.runtime.otlp
            assert traces is not None and otlp is not None
            wait_for(lambda: traces.join.pending() == 0, timeout=60)
            wait_for(lambda: len(joined) == traces.stats().join.joined, timeout=60)
            assert otlp.force_flush(10)
            metrics = daemon.runtime.render().decode()
        observed_ones = [t for *_, t, o in joined if o]
        _, found = decode(received.metrics[-1])  # cumulative: every probe so far
        labels = '{model="sim",target="sim"}'
        for name, prom_name, field in (
            (names.PROBE_SERVER_TTFT, "server_ttft", "ttft_seconds"),
            (names.PROBE_SERVER_QUEUE, "server_queue", "queue_seconds"),
            (names.PROBE_SERVER_PREFILL, "server_prefill", "prefill_seconds"),
            (names.PROBE_SERVER_DECODE, "server_decode", "decode_seconds"),
            (names.PROBE_SERVER_E2E, "server_e2e", "e2e_seconds"),
            (names.PROBE_PATH, "path", None),
        ):
            (series,) = found[name]
            assert series.unit == "s"
            assert series.attributes == {"streamobs.target": "sim", "gen_ai.request.model": "sim"}
            point = series.point
            count = sample(metrics, f"streamobs_probe_{prom_name}_seconds_count{labels}")
            assert point.count == count == len(observed_ones)
            if field is None:  # the path time, never below 0 over OTLP
                values = [max(t.path_seconds or 0.0, 0.0) for t in observed_ones]
            else:  # the simulator's own figures, exactly as on /metrics
                values = [getattr(t.span, field) for t in observed_ones]
            assert point.sum == pytest.approx(sum(values), rel=1e-9, abs=1e-12)


def test_a_dead_downstream_leaves_probes_and_metrics_alone() -> None:
    port = free_port()
    sim_config = SimulatorConfig(
        model="sim",
        ttft=0.02,
        itl=0.002,
        otlp_traces_endpoint=f"http://127.0.0.1:{port}/v1/traces",
        otlp_traces_batch_delay=0.05,
    )
    with black_hole() as dead, Simulator(sim_config) as sim:
        config = daemon_config(sim, port, dead, timeout="30s")
        config["traces_receiver"]["forward_queue_size"] = 2
        with traced_daemon(config) as (daemon, joined):
            metrics_url = f"http://127.0.0.1:{daemon.web.port}/metrics"
            traces = daemon.runtime.traces
            assert traces is not None

            def dropping() -> bool:
                forward = traces.stats().forward
                return forward is not None and forward.dropped > 0

            # The downstream never answers: its queue fills and bodies are dropped.
            wait_for(dropping, timeout=60)
            served = 'streamobs_probe_server_ttft_seconds_count{model="sim",target="sim"}'
            served_before = sample(requests.get(metrics_url, timeout=10).text, served)

            def exact_joins() -> int:
                return sum(1 for *_, observed in joined if observed)

            joined_before = exact_joins()
            # Probes go on at their interval, each joined to its span, and /metrics answers.
            for _ in range(5):
                reply = requests.get(metrics_url, timeout=10)
                assert reply.status_code == 200
            wait_for(lambda: exact_joins() >= joined_before + 5, timeout=60)
            assert all(result.ok for _, result, *_ in joined)
            text = requests.get(metrics_url, timeout=10).text
            assert sample(text, served) >= served_before + 5
            assert sample(text, "streamobs_traces_forward_dropped_requests_total") > 0
            assert sample(text, "streamobs_traces_forwarded_requests_total") == 0
