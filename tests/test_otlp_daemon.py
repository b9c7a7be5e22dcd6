"""`streamobs run` with an `otlp:` section pushes the probes it runs to a real receiver."""

from __future__ import annotations

import pytest

from streamobs.config import ConfigError, parse_config
from streamobs.daemon import Daemon
from streamobs.simulator import Simulator, SimulatorConfig
from tests.otlp_receiver import MetricsRequest, Received, receiver


def metric_names(requests: list[MetricsRequest]) -> set[str]:
    return {
        metric.name
        for request in requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_daemon_exports_probe_and_vllm_series(protocol: str) -> None:
    with (
        Simulator(SimulatorConfig(model="sim", ttft=0.02, itl=0.005)) as sim,
        receiver(protocol) as (endpoint, received),
    ):
        config = parse_config(
            {
                "web": {"listen_address": "127.0.0.1:0"},
                "shutdown_grace": "2s",
                "targets": [{"name": "sim", "url": sim.url, "interval": "200ms", "max_tokens": 4}],
                "collectors": {"gpu": {"enabled": False}},
                "otlp": {
                    "enabled": True,
                    "protocol": protocol,
                    "endpoint": endpoint,
                    "export_interval": "300ms",
                    "traces": True,
                    "service_name": "streamobs-test",
                },
            }
        )
        daemon = Daemon(config)
        daemon.start()
        try:
            wanted = {
                "gen_ai.client.operation.time_to_first_chunk",
                "gen_ai.client.operation.duration",
                "gen_ai.client.token.usage",
            }

            def arrived(r: Received = received) -> bool:
                return wanted <= metric_names(r.metrics) and bool(r.traces)

            assert received.wait_for(arrived, timeout=15), sorted(metric_names(received.metrics))
            names = metric_names(received.metrics)
            assert any(name.startswith("streamobs.engine.") for name in names)
            resource = received.metrics[-1].resource_metrics[0].resource
            attributes = {a.key: a.value.string_value for a in resource.attributes}
            assert attributes["service.name"] == "streamobs-test"
        finally:
            daemon.stop()


def test_bad_otlp_settings_are_config_errors() -> None:
    base = {"targets": [{"name": "a", "url": "http://h"}]}
    for otlp, message in (
        ({"protocol": "pigeon"}, "otlp.protocol"),
        ({"timeout": "soon"}, "otlp.timeout"),
        ({"colour": 1}, "otlp.colour: unknown key"),
        ({"certificate": "/nonexistent/ca.pem"}, "does not exist"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, "otlp": otlp})
