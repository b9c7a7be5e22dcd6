"""The one table of OTLP names, units and bucket boundaries streamobs uses.

GenAI names follow the OpenTelemetry GenAI semantic conventions (client metrics, status
Development): ``gen_ai.client.operation.duration``, ``.time_to_first_chunk``,
``.time_per_output_chunk`` and ``gen_ai.client.token.usage``, with the boundaries the
convention recommends. Everything without a convention is ``streamobs.*``. Constants are
spelled out here rather than imported from ``opentelemetry-semantic-conventions``, whose
GenAI constants are deprecated there since the conventions moved to their own repository.
"""

from __future__ import annotations

from typing import Final

# Attributes.
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
TOKEN_TYPE: Final = "gen_ai.token.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
TARGET: Final = "streamobs.target"  # the configured target name, the Prometheus `target`

# Values of gen_ai.operation.name by probe endpoint: Responses and Anthropic Messages are
# chat APIs in the conventions' sense (a conversation in, generated turns out).
OPERATIONS: Final = {
    "chat": "chat",
    "completions": "text_completion",
    "responses": "chat",
    "messages": "chat",
}
DEFAULT_PROVIDER: Final = "vllm"

# GenAI client metrics.
OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
TIME_PER_OUTPUT_CHUNK: Final = "gen_ai.client.operation.time_per_output_chunk"
TOKEN_USAGE: Final = "gen_ai.client.token.usage"

# streamobs' own probe metrics (no convention).
PROBE_ATTEMPTS: Final = "streamobs.probe.attempts"
PROBE_FAILURES: Final = "streamobs.probe.failures"
PROBE_BUFFERED: Final = "streamobs.probe.buffered"
PROBE_DEGRADED: Final = "streamobs.probe.degraded"  # + streamobs.probe.degraded_reason
DEGRADED_REASON: Final = "streamobs.probe.degraded_reason"
PROBE_TPOT: Final = "streamobs.probe.time_per_output_token"
PROBE_HEADERS: Final = "streamobs.probe.time_to_headers"
PROBE_SUCCESS: Final = "streamobs.probe.success"
PROBE_BURST_SHARE: Final = "streamobs.probe.burst_share"
PROBE_LAST_RUN: Final = "streamobs.probe.last_run"
PROBE_TTFT_OVERHEAD: Final = "streamobs.probe.ttft_overhead"
# Each probe's own server span (streamobs_probe_server_*_seconds and _path_seconds): the
# conventions' gen_ai.server.* names mean the server's view of all its requests, so these
# per-probe values are streamobs.*, named after vLLM's span attributes (gen_ai.latency.*).
PROBE_SERVER_QUEUE: Final = "streamobs.probe.server.time_in_queue"
PROBE_SERVER_TTFT: Final = "streamobs.probe.server.time_to_first_token"
PROBE_SERVER_PREFILL: Final = "streamobs.probe.server.time_in_model_prefill"
PROBE_SERVER_DECODE: Final = "streamobs.probe.server.time_in_model_decode"
PROBE_SERVER_E2E: Final = "streamobs.probe.server.e2e"
PROBE_PATH: Final = "streamobs.probe.path_time"  # client TTFT - server TTFT
SLO_TTFT: Final = "streamobs.slo.ttft.threshold"
SLO_TPOT: Final = "streamobs.slo.tpot.threshold"
SLO_OBJECTIVE: Final = "streamobs.slo.objective"

# The convention's ExplicitBucketBoundaries.
DURATION_BOUNDARIES: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BOUNDARIES: Final[tuple[float, ...]] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

SECONDS: Final = "s"
RATIO: Final = "1"
PROBES: Final = "{probe}"
TOKENS: Final = "{token}"
