"""Collectors: sources beside the probes (vLLM's own metrics), each exported by a
prometheus_client custom collector that only reads immutable snapshots."""

from streamobs.collectors.vllm import (
    ServerView,
    VllmSnapshot,
    redact_url,
    scrape_vllm,
    server_view,
    snapshot_from_text,
)
from streamobs.collectors.vllm_export import VllmCollector
from streamobs.collectors.vllm_names import NORMALISED, NormalisedSpec
from streamobs.collectors.vllm_normalise import HistogramSeries, NormalisedFamily, ScalarSeries
from streamobs.collectors.vllm_parse import ParsedFamily

__all__ = [
    "NORMALISED",
    "HistogramSeries",
    "NormalisedFamily",
    "NormalisedSpec",
    "ParsedFamily",
    "ScalarSeries",
    "ServerView",
    "VllmCollector",
    "VllmSnapshot",
    "redact_url",
    "scrape_vllm",
    "server_view",
    "snapshot_from_text",
]
