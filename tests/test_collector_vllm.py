"""The vLLM collector: parsing the real capture, V0/V1 normalisation, re-exposure, and
every way a scrape fails against real loopback servers."""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.samples import Sample

from streamobs.collectors.engines import (
    NORMALISED,
    EngineExporter,
    EngineSnapshot,
    redact_url,
    scrape_engine,
    server_view,
    snapshot_from_text,
)
from streamobs.collectors.engines.normalise import NormalisedFamily, ScalarSeries
from streamobs.collectors.engines.parse import ParsedFamily
from tests.fixtures import FIXTURES
from tests.scripted_server import ScriptedServer, send, silent

DATA = Path(__file__).parent / "data" / "vllm"
CAPTURE = (FIXTURES / "metrics.txt").read_text(encoding="utf-8")
V0_TEXT = (DATA / "v0-metrics.txt").read_text(encoding="utf-8")
V1_TEXT = (DATA / "v1-metrics.txt").read_text(encoding="utf-8")
PREFIX_CACHE = ("streamobs_engine_prefix_cache_queries", "streamobs_engine_prefix_cache_hits")


def render(
    snapshots: Mapping[str, EngineSnapshot],
    *,
    reexpose: bool = False,
    targets: list[str] | None = None,
    engine_families_only: bool = False,
) -> str:
    """The text /metrics of a registry holding only the collector; the engines are
    configured as vLLM."""
    registry = CollectorRegistry()
    names = list(snapshots) if targets is None else targets
    collector = EngineExporter(
        lambda: snapshots,
        targets=dict.fromkeys(names, "vllm"),
        reexpose=reexpose,
        engine_families_only=engine_families_only,
    )
    registry.register(collector)
    return generate_latest(registry).decode("utf-8")


def scalar_values(snapshot: EngineSnapshot, name: str) -> dict[tuple[str, ...], float]:
    family = snapshot.normalised_family(name)
    assert family is not None, name
    return {s.labels: s.value for s in family.scalars}


def capture_histogram(name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Buckets, count and sum of one vLLM histogram, read straight off the capture text."""
    bucket_line = rf'^{name}_bucket{{engine="0",le="([^"]+)",.*}} (\S+)$'
    buckets = [(float(le), float(v)) for le, v in re.findall(bucket_line, CAPTURE, re.M)]
    count = re.search(rf"^{name}_count{{.*}} (\S+)$", CAPTURE, re.M)
    total = re.search(rf"^{name}_sum{{.*}} (\S+)$", CAPTURE, re.M)
    assert buckets and count and total
    return buckets, float(count.group(1)), float(total.group(1))


# --- parsing and normalising the real capture ------------------------------------------


def test_capture_normalised_values_equal_the_capture() -> None:
    snapshot = snapshot_from_text(CAPTURE, url="http://127.0.0.1:8000/metrics")
    assert snapshot.up and snapshot.error is None
    assert isinstance(snapshot.families, tuple) and isinstance(snapshot.normalised, tuple)
    series = ("tiny", "0")
    assert scalar_values(snapshot, "streamobs_engine_generation_tokens_total") == {series: 1604.0}
    assert scalar_values(snapshot, "streamobs_engine_prompt_tokens_total") == {series: 79.0}
    assert scalar_values(snapshot, "streamobs_engine_kv_cache_usage_ratio") == {series: 0.0}
    assert scalar_values(snapshot, "streamobs_engine_requests_running") == {series: 0.0}
    assert scalar_values(snapshot, "streamobs_engine_requests_waiting") == {series: 0.0}
    assert scalar_values(snapshot, "streamobs_engine_preemptions_total") == {series: 0.0}
    assert scalar_values(snapshot, "streamobs_engine_prefix_cache_queries_total") == {series: 79.0}
    assert scalar_values(snapshot, "streamobs_engine_prefix_cache_hits_total") == {series: 0.0}
    assert scalar_values(snapshot, "streamobs_engine_request_success_total") == {
        ("tiny", "0", "stop"): 0.0,
        ("tiny", "0", "length"): 8.0,
        ("tiny", "0", "abort"): 0.0,
        ("tiny", "0", "error"): 0.0,
        ("tiny", "0", "repetition"): 0.0,
    }


@pytest.mark.parametrize(
    ("normalised", "source"),
    [
        ("streamobs_engine_time_to_first_token_seconds", "vllm:time_to_first_token_seconds"),
        ("streamobs_engine_inter_token_latency_seconds", "vllm:inter_token_latency_seconds"),
        ("streamobs_engine_e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds"),
        ("streamobs_engine_request_queue_time_seconds", "vllm:request_queue_time_seconds"),
    ],
)
def test_capture_histograms_keep_vllm_buckets(normalised: str, source: str) -> None:
    family = snapshot_from_text(CAPTURE).normalised_family(normalised)
    assert family is not None and family.source == source
    (histogram,) = family.histograms
    buckets, count, total = capture_histogram(source)
    assert histogram.labels == ("tiny", "0")
    assert list(histogram.buckets) == buckets
    assert (histogram.count, histogram.sum) == (count, total)


def test_capture_ttft_histogram_numbers() -> None:
    family = snapshot_from_text(CAPTURE).normalised_family(
        "streamobs_engine_time_to_first_token_seconds"
    )
    assert family is not None
    (ttft,) = family.histograms
    assert ttft.count == 9.0
    assert ttft.sum == 0.1504368782043457
    assert ttft.buckets[:6] == (
        (0.001, 0.0),
        (0.005, 0.0),
        (0.01, 3.0),
        (0.02, 7.0),
        (0.04, 8.0),
        (0.06, 9.0),
    )
    assert ttft.buckets[-1] == (float("inf"), 9.0)


def test_server_view_reads_generation_tokens_and_ttft() -> None:
    view = server_view(snapshot_from_text(CAPTURE))
    assert view.generation_tokens_total == 1604.0
    assert view.time_to_first_token is not None
    assert view.time_to_first_token.count == 9.0
    assert view.time_to_first_token.sum == 0.1504368782043457
    other = server_view(snapshot_from_text(CAPTURE), model="another-model")
    assert other.generation_tokens_total is None and other.time_to_first_token is None


def test_server_view_sums_engines() -> None:
    # Two engines (data parallel): every engine series twice, within the same family.
    lines = []
    for line in CAPTURE.splitlines():
        lines.append(line)
        if 'engine="0"' in line:
            lines.append(line.replace('engine="0"', 'engine="1"'))
    text = "\n".join(lines) + "\n"
    snapshot = snapshot_from_text(text)
    assert snapshot.up
    assert len(scalar_values(snapshot, "streamobs_engine_generation_tokens_total")) == 2
    view = server_view(snapshot, model="tiny")
    assert view.generation_tokens_total == 3208.0
    assert view.time_to_first_token is not None
    assert view.time_to_first_token.count == 18.0
    assert view.time_to_first_token.buckets[2] == (0.01, 6.0)


# --- V0 and V1 names -------------------------------------------------------------------


def test_v0_and_v1_texts_give_the_same_normalised_series() -> None:
    v0 = snapshot_from_text(V0_TEXT)
    v1 = snapshot_from_text(V1_TEXT)
    assert v0.up and v1.up
    v0_lines = render({"gpu-1": v0}).splitlines()
    v1_lines = render({"gpu-1": v1}).splitlines()

    def prefix_cache_samples(lines: list[str]) -> list[str]:
        return [ln for ln in lines if ln.startswith(PREFIX_CACHE)]

    # V0 has no prefix-cache counters (only hit-rate gauges): the one family V1 adds.
    assert prefix_cache_samples(v0_lines) == []
    assert prefix_cache_samples(v1_lines) == [
        'streamobs_engine_prefix_cache_queries_total{engine="gpu-1",engine_index="0",'
        'kind="vllm",model="tiny"} 79.0',
        'streamobs_engine_prefix_cache_hits_total{engine="gpu-1",engine_index="0",'
        'kind="vllm",model="tiny"} 32.0',
    ]
    # V1 also has the per-request time per output token (V0's name of that meaning was
    # its inter-token latency, normalised as such).
    v1_only = (*PREFIX_CACHE, "streamobs_engine_time_per_output_token_seconds_")
    v1_shared = [ln for ln in v1_lines if not ln.startswith(v1_only)]
    assert v0_lines == v1_shared
    # And that shared output is not trivially empty.
    assert (
        'streamobs_engine_kv_cache_usage_ratio{engine="gpu-1",engine_index="0",kind="vllm",'
        'model="tiny"} 0.0625'
    ) in v0_lines
    assert (
        'streamobs_engine_request_success_total{engine="gpu-1",engine_index="0",'
        'finished_reason="length",kind="vllm",model="tiny"} 5.0'
    ) in v0_lines
    assert (
        'streamobs_engine_inter_token_latency_seconds_count{engine="gpu-1",'
        'engine_index="0",kind="vllm",model="tiny"} 1595.0'
    ) in v0_lines


def test_v0_sources_are_the_old_names() -> None:
    v0 = snapshot_from_text(V0_TEXT)
    sources = {f.spec.name: f.source for f in v0.normalised}
    assert sources["streamobs_engine_kv_cache_usage_ratio"] == "vllm:gpu_cache_usage_perc"
    assert sources["streamobs_engine_inter_token_latency_seconds"] == (
        "vllm:time_per_output_token_seconds"
    )
    assert all(s.labels[1] == "0" for f in v0.normalised for s in f.scalars)


def test_newest_name_wins_when_a_server_serves_both() -> None:
    text = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:gpu_prefix_cache_queries_total counter
vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 7.0
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 9.0
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 3.0
"""
    snapshot = snapshot_from_text(text)
    assert scalar_values(snapshot, "streamobs_engine_kv_cache_usage_ratio") == {("m", "0"): 0.25}
    queries = scalar_values(snapshot, "streamobs_engine_prefix_cache_queries_total")
    assert queries == {("m", "0"): 9.0}
    # Only the old name present: it is used.
    assert scalar_values(snapshot, "streamobs_engine_prefix_cache_hits_total") == {("m", "0"): 3.0}


def test_normalisation_table_names() -> None:
    assert [spec.name for spec in NORMALISED] == [
        "streamobs_engine_requests_running",
        "streamobs_engine_requests_waiting",
        "streamobs_engine_kv_cache_usage_ratio",
        "streamobs_engine_prompt_tokens_total",
        "streamobs_engine_generation_tokens_total",
        "streamobs_engine_preemptions_total",
        "streamobs_engine_prefix_cache_queries_total",
        "streamobs_engine_prefix_cache_hits_total",
        "streamobs_engine_request_success_total",
        "streamobs_engine_time_to_first_token_seconds",
        "streamobs_engine_inter_token_latency_seconds",
        "streamobs_engine_e2e_request_latency_seconds",
        "streamobs_engine_request_queue_time_seconds",
        "streamobs_engine_prompt_tokens_cached_total",
        "streamobs_engine_time_per_output_token_seconds",
        "streamobs_engine_request_prefill_time_seconds",
        "streamobs_engine_request_decode_time_seconds",
    ]


# --- re-exposure -----------------------------------------------------------------------


def capture_samples() -> list[str]:
    return [line for line in CAPTURE.splitlines() if line and not line.startswith("#")]


def test_reexposed_capture_round_trips_unchanged() -> None:
    output = render({"vllm": snapshot_from_text(CAPTURE)}, reexpose=True)
    lines = set(output.splitlines())
    missing = [sample for sample in capture_samples() if sample not in lines]
    assert not missing
    # The whole vLLM part is byte for byte the capture, but for trailing blanks in HELP
    # texts, which prometheus_client's parser strips.
    vllm_part = output[: output.index("# HELP streamobs_")]
    expected = [
        line.rstrip() if line.startswith("# HELP") else line for line in CAPTURE.split("\n")
    ]
    assert vllm_part.split("\n") == expected


def test_reexpose_off_exposes_none_of_vllms_series() -> None:
    output = render({"vllm": snapshot_from_text(CAPTURE)}, reexpose=False)
    lines = set(output.splitlines())
    assert not [sample for sample in capture_samples() if sample in lines]
    assert "vllm:" not in output


def test_only_the_engines_own_families_are_reexposed_beside_streamobs_own() -> None:
    output = render({"vllm": snapshot_from_text(CAPTURE)}, reexpose=True, engine_families_only=True)
    assert 'vllm:generation_tokens_total{engine="0",model_name="tiny"} 1604.0' in output
    assert "process_cpu_seconds_total" not in output and "python_gc" not in output


def test_several_targets_are_told_apart_by_a_target_label() -> None:
    snapshot = snapshot_from_text(CAPTURE)
    output = render({"a": snapshot, "b": snapshot}, reexpose=True)
    lines = set(output.splitlines())
    assert output.count("# TYPE vllm:generation_tokens_total counter") == 1
    for target in ("a", "b"):
        assert (
            f'vllm:generation_tokens_total{{engine="{target}",exported_engine="0",'
            'model_name="tiny"} 1604.0'
        ) in lines
        assert f'process_open_fds{{engine="{target}"}} 35.0' in lines
    assert 'vllm:generation_tokens_total{engine="0",model_name="tiny"} 1604.0' not in lines


def test_parser_suffix_quirks_round_trip() -> None:
    text = """\
# HELP plain A counter declared without _total.
# TYPE plain counter
plain{a="1"} 3.0
# HELP bar_total A counter with its creation time.
# TYPE bar_total counter
bar_total{a="1"} 1.0
bar_total{a="2"} 2.0
# HELP bar_created A counter with its creation time.
# TYPE bar_created gauge
bar_created{a="1"} 1.7e+09
bar_created{a="2"} 1.8e+09
# HELP lonely_created A gauge that only looks like a creation time.
# TYPE lonely_created gauge
lonely_created 5.0
"""
    snapshot = snapshot_from_text(text)
    bar = next(f for f in snapshot.families if f.name == "bar")
    # Folded back, each creation time right after its series (as OpenMetrics wants).
    assert [(s.name, s.labels["a"]) for s in bar.samples] == [
        ("bar_total", "1"),
        ("bar_created", "1"),
        ("bar_total", "2"),
        ("bar_created", "2"),
    ]
    output = render({"x": snapshot}, reexpose=True)
    vllm_part = output[: output.index("# HELP streamobs_")]
    assert vllm_part == text.replace("# TYPE plain counter", "# TYPE plain untyped")


# --- the collector never fails a scrape ------------------------------------------------


def test_describe_does_no_io() -> None:
    def must_not_be_called() -> Mapping[str, EngineSnapshot]:
        raise AssertionError("describe() read the snapshots")

    registry = CollectorRegistry()
    registry.register(EngineExporter(must_not_be_called, targets=["a"]))
    names = {m.name for m in EngineExporter(must_not_be_called).describe()}
    assert "streamobs_collector_up" in names and "streamobs_engine_generation_tokens" in names


def test_configured_target_without_a_snapshot_still_has_children() -> None:
    output = render({}, targets=["never-scraped"])
    assert 'streamobs_collector_up{collector="vllm",target="never-scraped"} 0.0' in output
    assert (
        'streamobs_collector_duration_seconds{collector="vllm",target="never-scraped"} 0.0'
    ) in output


def test_failing_snapshot_source_reports_targets_down_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Mapping[str, EngineSnapshot]:
        raise RuntimeError("store unavailable")

    registry = CollectorRegistry()
    registry.register(EngineExporter(broken, targets={"a": "vllm"}, reexpose=True))
    with caplog.at_level(logging.INFO, logger="streamobs.collectors.engines.export"):
        for _ in range(3):
            output = generate_latest(registry).decode()
            assert 'streamobs_collector_up{collector="vllm",target="a"} 0.0' in output
    assert len([r for r in caplog.records if "cannot read engine snapshots" in r.message]) == 1


def test_odd_snapshots_never_make_collect_raise(caplog: pytest.LogCaptureFixture) -> None:
    good = snapshot_from_text(CAPTURE)
    bad_family = NormalisedFamily(
        NORMALISED[0], "vllm:num_requests_running", scalars=(ScalarSeries(("only-model",), 1.0),)
    )
    odd = EngineSnapshot("http://x", True, None, 0.01, 0.0, good.families, (bad_family,))
    snapshots: dict[str, object] = {"good": good, "odd": odd, "none": None, "text": "up"}
    # Deliberately not all EngineSnapshots: whatever the store hands over, scrapes must work.
    source = cast(Callable[[], Mapping[str, EngineSnapshot]], lambda: snapshots)
    registry = CollectorRegistry()
    registry.register(EngineExporter(source, targets=["good", "odd"], reexpose=True))
    with caplog.at_level(logging.INFO, logger="streamobs.collectors.engines.export"):
        for _ in range(3):
            output = generate_latest(registry).decode()
    assert 'streamobs_collector_up{collector="vllm",target="good"} 1.0' in output
    # Of no known kind (the odd snapshot carries none): reported as "engine".
    for target in ("odd", "none", "text"):
        assert f'streamobs_collector_up{{collector="engine",target="{target}"}} 0.0' in output
    # The odd target is not half exported: none of its series made it out.
    assert 'engine="odd"' not in output
    assert len([r for r in caplog.records if "cannot export engine odd" in r.message]) == 1


def test_family_a_snapshot_cannot_express_is_not_half_exported() -> None:
    good = snapshot_from_text(CAPTURE)
    bogus = ParsedFamily("weird", "no-such-type", "", (Sample("weird", {}, 1.0),))
    odd = EngineSnapshot("http://x", True, None, 0.01, 0.0, (*good.families, bogus))
    output = render({"a": good, "b": odd}, reexpose=True)
    assert 'streamobs_collector_up{collector="vllm",target="a"} 1.0' in output
    assert 'streamobs_collector_up{collector="vllm",target="b"} 0.0' in output
    assert 'engine="b"' not in output


def test_same_name_with_another_type_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = snapshot_from_text("# TYPE vllm:thing gauge\nvllm:thing 1.0\n")
    b = snapshot_from_text("# TYPE vllm:thing untyped\nvllm:thing 2.0\n")
    registry = CollectorRegistry()
    registry.register(EngineExporter(lambda: {"a": a, "b": b}, reexpose=True))
    with caplog.at_level(logging.WARNING, logger="streamobs.collectors.engines.export"):
        for _ in range(3):
            output = generate_latest(registry).decode()
    assert output.count("# TYPE vllm:thing") == 1
    assert 'vllm:thing{engine="a"} 1.0' in output and 'engine="b"} 2.0' not in output
    assert 'streamobs_collector_up{collector="vllm",target="b"} 1.0' in output
    assert [r.getMessage() for r in caplog.records] == [
        "engine b: not re-exposing vllm:thing, already exposed with another type"
    ]


def test_target_state_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    down = EngineSnapshot("http://x", False, "connection failed: Connection refused", 0.001, 0.0)
    up = snapshot_from_text(CAPTURE)
    current: dict[str, EngineSnapshot] = {"a": down}
    registry = CollectorRegistry()
    registry.register(EngineExporter(lambda: current, targets={"a": "vllm"}))
    with caplog.at_level(logging.INFO, logger="streamobs.collectors.engines.export"):
        for snapshot in (down, down, down, up, up, down, down):
            current["a"] = snapshot
            generate_latest(registry)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "engine a is down: connection failed: Connection refused",
        "engine a is up again",
        "engine a is down: connection failed: Connection refused",
    ]


def test_redact_url_masks_the_password() -> None:
    assert redact_url("http://user:secret@127.0.0.1:8000/metrics") == (
        "http://user:***@127.0.0.1:8000/metrics"
    )
    assert redact_url("http://127.0.0.1:8000/metrics") == "http://127.0.0.1:8000/metrics"


# --- real loopback servers -------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    body = b""

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(status: int, body: bytes, content_type: str | None = None) -> Iterator[str]:
    attributes: dict[str, object] = {"status": status, "body": body}
    if content_type is not None:
        attributes["content_type"] = content_type
    handler = type("Handler", (_Handler,), attributes)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_reported_down(snapshot: EngineSnapshot, error_part: str) -> None:
    assert not snapshot.up
    assert snapshot.error is not None and error_part in snapshot.error, snapshot.error
    assert "\n" not in snapshot.error
    assert snapshot.families == () and snapshot.normalised == ()
    output = render({"gpu-1": snapshot}, reexpose=True)
    assert 'streamobs_collector_up{collector="vllm",target="gpu-1"} 0.0' in output
    assert "vllm:" not in output and 'model="' not in output


def test_scrape_of_a_real_server_matches_the_capture() -> None:
    with http_server(200, CAPTURE.encode()) as url:
        first = scrape_engine(url, timeout=5, max_bytes=1 << 20)
        second = scrape_engine(url, timeout=5, max_bytes=1 << 20)
        own = scrape_engine(url, timeout=5, max_bytes=1 << 20)
    expected = snapshot_from_text(CAPTURE)
    for snapshot in (first, second, own):
        assert snapshot.up, snapshot.error
        assert snapshot.url == url
        assert snapshot.families == expected.families
        assert snapshot.normalised == expected.normalised
        assert 0 < snapshot.duration_seconds < 5
        assert abs(snapshot.scraped_at - time.time()) < 60
    output = render({"gpu-1": first})
    assert 'streamobs_collector_up{collector="vllm",target="gpu-1"} 1.0' in output


def test_connection_refused() -> None:
    snapshot = scrape_engine(f"http://127.0.0.1:{closed_port()}/metrics", timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "connection failed: connection refused")


def test_server_that_never_answers_respects_the_deadline() -> None:
    with ScriptedServer(silent) as server:
        start = time.monotonic()
        snapshot = scrape_engine(server.url + "/metrics", timeout=0.5, max_bytes=1 << 20)
        elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 0.3
    assert 0.45 < snapshot.duration_seconds < 0.8
    assert_reported_down(snapshot, "no complete response within 0.5 s")


def test_server_trickling_headers_respects_the_overall_deadline() -> None:
    # One byte every 50 ms: no single read ever waits long enough to time out.
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
    with ScriptedServer(send(*(bytes([b]) for b in head), delay=0.05)) as server:
        start = time.monotonic()
        snapshot = scrape_engine(server.url + "/metrics", timeout=0.5, max_bytes=1 << 20)
        elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 0.3
    assert_reported_down(snapshot, "no complete response within 0.5 s")


def test_server_trickling_the_body_respects_the_overall_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    body = CAPTURE.encode()[:100]
    with ScriptedServer(send(head, *(bytes([b]) for b in body), delay=0.05)) as server:
        start = time.monotonic()
        snapshot = scrape_engine(server.url + "/metrics", timeout=0.5, max_bytes=1 << 20)
        elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 0.3
    assert_reported_down(snapshot, "no complete response within 0.5 s")


def test_trickled_body_without_length_is_not_mistaken_for_a_complete_one() -> None:
    # Without Content-Length, the shut-down socket looks like a clean end of body.
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    lines = [line.encode() + b"\n" for line in CAPTURE.splitlines()[:40]]
    with ScriptedServer(send(head, *lines, delay=0.05)) as server:
        snapshot = scrape_engine(server.url + "/metrics", timeout=0.5, max_bytes=1 << 20)
    assert_reported_down(snapshot, "no complete response within 0.5 s")


def test_http_500() -> None:
    with http_server(500, b"engine dead\n") as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "HTTP 500 Internal Server Error")


def test_non_text_response() -> None:
    with http_server(200, b'{"detail": "Not Found"}', "application/json") as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "unexpected content type 'application/json'")


def test_garbage_body() -> None:
    with http_server(200, b"<html><body>\nnot metrics\n</body></html>\n") as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "cannot parse metrics text")


def test_binary_body() -> None:
    with http_server(200, bytes(range(256))) as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "body is not UTF-8 text")


def test_empty_body() -> None:
    with http_server(200, b"") as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "no metrics in response")


def test_body_over_max_bytes_with_content_length() -> None:
    with http_server(200, CAPTURE.encode()) as url:
        snapshot = scrape_engine(url, timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "response larger than 1000 bytes")


def test_body_over_max_bytes_without_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    with ScriptedServer(send(head, CAPTURE.encode(), then_close=True)) as server:
        snapshot = scrape_engine(server.url + "/metrics", timeout=2, max_bytes=1000)
    assert_reported_down(snapshot, "response larger than 1000 bytes")


def test_server_closing_mid_body() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    with ScriptedServer(send(head, CAPTURE.encode()[:500], then_close=True)) as server:
        snapshot = scrape_engine(server.url + "/metrics", timeout=2, max_bytes=1 << 20)
    assert_reported_down(snapshot, "connection closed before the response was complete")
