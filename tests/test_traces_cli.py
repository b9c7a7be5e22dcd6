"""`streamobs probe --traces-receiver`: one probe's breakdown from the server's own span."""

from __future__ import annotations

import json

from streamobs.simulator import Simulator, SimulatorConfig
from tests.fixtures import free_port, run_cli


def test_probe_shows_the_servers_side_of_the_same_request() -> None:
    port = free_port()
    config = SimulatorConfig(
        model="sim",
        ttft=0.05,
        itl=0.002,
        queue=0.02,
        otlp_traces_endpoint=f"http://127.0.0.1:{port}/v1/traces",
        otlp_traces_batch_delay=0.2,
    )
    with Simulator(config) as sim:
        done = run_cli(
            "probe", sim.url, "--max-tokens", "5", "--traces-receiver", f"127.0.0.1:{port}",
            "--traces-wait", "30", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (probe,) = json.loads(done.stdout)["probes"]
        server = probe["server"]
        record = sim.request_log("chatcmpl-" + probe["request_id"])
        assert record is not None and record.span_attributes is not None
        sent = record.span_attributes
        assert server["trace_id"] == probe["trace_id"]
        assert server["parent_span_id"] == probe["span_id"]
        assert server["seconds"]["ttft"] == sent["gen_ai.latency.time_to_first_token"]
        assert server["seconds"]["queue"] == sent["gen_ai.latency.time_in_queue"]
        assert server["seconds"]["prefill"] == sent["gen_ai.latency.time_in_model_prefill"]
        assert server["completion_tokens"] == 5
        assert server["path_seconds"] == probe["seconds"]["ttft"] - server["seconds"]["ttft"]

        text = run_cli(
            "probe", sim.url, "--max-tokens", "5", "--traces-receiver", f"127.0.0.1:{port}",
            "--traces-wait", "30",
        )  # fmt: skip
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        server = lines.index(next(line for line in lines if line.startswith("  server  ")))
        labels = [line.split()[0] for line in lines[server + 1 :]]
        assert labels == ["queue", "prefill", "TTFT", "decode", "e2e", "tokens", "path"]


def test_probe_says_when_no_span_came() -> None:
    with Simulator(SimulatorConfig(model="sim", ttft=0.01, itl=0.001)) as sim:
        done = run_cli(
            "probe", sim.url, "--max-tokens", "2", "--traces-receiver",
            f"127.0.0.1:{free_port()}", "--traces-wait", "0.5",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "  server        no span within 0.5 s" in done.stdout


def test_bad_receiver_address_is_a_usage_error() -> None:
    done = run_cli("probe", "http://127.0.0.1:9", "--model", "m", "--traces-receiver", "nowhere")
    assert done.returncode == 2
    assert "traces receiver address" in done.stderr
