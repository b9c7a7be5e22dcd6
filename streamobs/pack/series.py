"""The series the pack reads, and small PromQL helpers shared by rules and dashboards.

The names are what ``streamobs run`` exposes (see ``tests/golden/metrics-daemon.txt``, the
vLLM name table in ``streamobs/collectors/engines/names.py`` and the GPU one in
``streamobs/collectors/gpu/names.py``); the pack's tests check every name used here
against those sources.
"""

from __future__ import annotations

from streamobs.collectors.engines.export import UNRESOLVED
from streamobs.collectors.engines.kinds import KIND_NAMES

# Probes (streamobs/export/prometheus/probe.py); labels target, model.
TTFT = "streamobs_probe_ttft_seconds"
TPOT = "streamobs_probe_tpot_seconds"
ITL = "streamobs_probe_itl_seconds"
E2E = "streamobs_probe_e2e_seconds"
HEADERS = "streamobs_probe_headers_seconds"
ATTEMPTS = "streamobs_probe_attempts_total"
TARGET_INFO = "streamobs_target_info"  # labels target, engine, endpoint
FAILURES = "streamobs_probe_failures_total"  # + outcome
OUTPUT_TOKENS = "streamobs_probe_output_tokens_total"
BUFFERED = "streamobs_probe_buffered_total"
DEGRADED = "streamobs_probe_degraded_total"  # + reason
LATENCY_ELIGIBLE = "streamobs_probe_latency_eligible_total"
CONNECTION = "streamobs_probe_connection_seconds"  # + phase
SUCCESS = "streamobs_probe_success"
BURST_SHARE = "streamobs_probe_burst_share_ratio"
LAST_RUN = "streamobs_probe_last_run_timestamp_seconds"
TTFT_OVERHEAD = "streamobs_probe_ttft_overhead_seconds"
# Each probe's own server span (streamobs/export/prometheus/server_timing.py), only while
# the trace receiver is on; labels target, model.
SERVER_TTFT = "streamobs_probe_server_ttft_seconds"
SERVER_QUEUE = "streamobs_probe_server_queue_seconds"
SERVER_PREFILL = "streamobs_probe_server_prefill_seconds"
PATH = "streamobs_probe_path_seconds"  # client TTFT - server TTFT of the same request
SLO_TTFT_THRESHOLD = "streamobs_slo_ttft_threshold_seconds"  # label target only
SLO_TPOT_THRESHOLD = "streamobs_slo_tpot_threshold_seconds"
SLO_OBJECTIVE = "streamobs_slo_objective_ratio"

# streamobs itself.
BUILD_INFO = "streamobs_build_info"
RELOAD_OK = "streamobs_config_last_reload_successful"
COLLECTOR_UP = "streamobs_collector_up"  # labels collector, and target (the engine's name)
# The matcher of every engine's collector health: one collector per engine kind, and
# "engine" while an engine's kind is not known.
ENGINE_COLLECTORS = 'collector=~"' + "|".join((*KIND_NAMES, UNRESOLVED)) + '"'
COLLECTOR_DURATION = "streamobs_collector_duration_seconds"
OTLP_EXPORT_FAILURES = "streamobs_otlp_export_failures_total"  # + signal
PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_RSS = "process_resident_memory_bytes"

# vLLM, normalised over V0 and V1 names (streamobs/collectors/engines/names.py);
# labels engine, model, engine_index.
VLLM_RUNNING = "streamobs_engine_requests_running"
VLLM_WAITING = "streamobs_engine_requests_waiting"
VLLM_KV_CACHE = "streamobs_engine_kv_cache_usage_ratio"
VLLM_PROMPT_TOKENS = "streamobs_engine_prompt_tokens_total"
VLLM_GENERATION_TOKENS = "streamobs_engine_generation_tokens_total"
VLLM_PREEMPTIONS = "streamobs_engine_preemptions_total"
VLLM_PREFIX_QUERIES = "streamobs_engine_prefix_cache_queries_total"
VLLM_PREFIX_HITS = "streamobs_engine_prefix_cache_hits_total"
VLLM_REQUEST_SUCCESS = "streamobs_engine_request_success_total"  # + finished_reason
VLLM_TTFT = "streamobs_engine_time_to_first_token_seconds"
VLLM_ITL = "streamobs_engine_inter_token_latency_seconds"
VLLM_E2E = "streamobs_engine_e2e_request_latency_seconds"
VLLM_QUEUE_TIME = "streamobs_engine_request_queue_time_seconds"

# GPU (streamobs/collectors/gpu/names.py); labels gpu, uuid, name.
GPU_UTILIZATION = "streamobs_gpu_utilization_ratio"
GPU_MEMORY_UTILIZATION = "streamobs_gpu_memory_utilization_ratio"
GPU_MEMORY_USED = "streamobs_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL = "streamobs_gpu_memory_total_bytes"
GPU_POWER = "streamobs_gpu_power_usage_watts"
GPU_POWER_LIMIT = "streamobs_gpu_power_limit_watts"
GPU_ENERGY = "streamobs_gpu_energy_joules_total"
GPU_TEMPERATURE = "streamobs_gpu_temperature_celsius"
GPU_SM_CLOCK = "streamobs_gpu_sm_clock_hertz"
GPU_MEMORY_CLOCK = "streamobs_gpu_memory_clock_hertz"
GPU_CLOCK_EVENT = "streamobs_gpu_clock_event_active"  # + reason
GPU_PCIE_TX = "streamobs_gpu_pcie_tx_bytes_per_second"
GPU_PCIE_RX = "streamobs_gpu_pcie_rx_bytes_per_second"
GPU_ECC_ERRORS = "streamobs_gpu_ecc_errors_total"  # + error_type
GPU_REMAPPING_FAILED = "streamobs_gpu_remapping_failed"
GPU_PROCESS_MEMORY = "streamobs_gpu_process_memory_used_bytes"  # + pid, served_model

# Derived over streamobs' own window (streamobs/efficiency.py); no labels of their own.
EFFICIENCY_TOKENS_PER_SECOND = "streamobs_efficiency_output_tokens_per_second"
EFFICIENCY_JOULES_PER_TOKEN = "streamobs_efficiency_joules_per_output_token"
EFFICIENCY_COST_PER_MILLION = "streamobs_efficiency_cost_per_million_output_tokens"


def selector(*matchers: str) -> str:
    """``{a, b}`` from the non-empty matchers."""
    return "{" + ", ".join(m for m in matchers if m) + "}"


def number(value: float) -> str:
    """A float as PromQL and people write it: ``2`` not ``2.0``, ``0.1``, ``14.4``."""
    return f"{value:.10g}"


def le_matcher(threshold: float) -> str:
    """Matches the bucket edge ``threshold`` however the exposition spelled it.

    prometheus_client writes ``le="2.0"``, the Go client ``le="2"``, and Prometheus 3
    rewrites both to one form on ingestion; a rule pinned to one spelling would silently
    find no bucket under another.
    """
    spellings = sorted({number(threshold), repr(float(threshold))}, key=len)
    if len(spellings) == 1:
        return f'le="{spellings[0]}"'
    return 'le=~"' + "|".join(s.replace(".", "\\\\.") for s in spellings) + '"'


def human_seconds(seconds: float) -> str:
    """``2s``, ``100ms``, ``1.5s``: for summaries and panel titles."""
    if seconds < 1:
        return f"{number(seconds * 1000)}ms"
    return f"{number(seconds)}s"


def percent(ratio: float) -> str:
    """``99%``, ``99.5%``."""
    return f"{number(ratio * 100)}%"
