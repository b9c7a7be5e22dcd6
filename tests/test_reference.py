"""The README's metric reference is generated from the code and must be current."""

from __future__ import annotations

from streamobs import reference


def test_readme_metric_reference_is_current() -> None:
    assert reference.main(["--check"]) == 0, "run `python -m streamobs.reference --write`"


def test_reference_names_every_exported_family() -> None:
    names = {f.name for f in reference.daemon_families()}
    for name in (
        "streamobs_probe_ttft_seconds",
        "streamobs_probe_failures_total",
        "streamobs_engine_kv_cache_usage_ratio",
        "streamobs_gpu_energy_joules_total",
        "streamobs_collector_up",
        "streamobs_config_last_reload_successful",
        "streamobs_probe_ttft_overhead_seconds",
        "streamobs_efficiency_joules_per_output_token",
    ):
        assert name in names, name
    probe = {f.name for f in reference.probe_endpoint_families()}
    assert {"streamobs_probe_success", "streamobs_probe_phase_seconds"} <= probe
