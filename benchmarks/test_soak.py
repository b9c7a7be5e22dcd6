"""A short soak smoke run: every fault class counted, no leaks, /metrics always answering."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.soak import FAULT_OUTCOMES, run_soak


def test_soak_smoke() -> None:
    report = run_soak(duration=len(FAULT_OUTCOMES) * 2 * 1.0 + 2, phase=1.0)
    details = asdict(report)
    assert report.probes > 50, details
    assert not report.missing_outcomes, details
    assert report.metrics_failures == 0 and report.metrics_answers > 50, details
    assert report.metrics_slowest_s < 2.0, details
    assert report.threads_end <= report.threads_start + 4, details
    assert report.fds_end <= report.fds_start + 8, details
    assert report.rss_last_mb <= report.rss_first_mb * 1.25 + 5, details
    assert {0.0, 1.0} <= set(report.vllm_up_seen), details
    assert report.otlp_failures > 0, details
    assert report.log_lines <= 6 * report.phases, details  # once per change, not per scrape
    assert report.ok
