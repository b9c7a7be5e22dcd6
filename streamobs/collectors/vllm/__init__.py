"""The vLLM collector: scrape vLLM's /metrics in the background, normalise, export."""

from streamobs.collectors.vllm.export import VllmCollector
from streamobs.collectors.vllm.names import NORMALISED, NormalisedSpec
from streamobs.collectors.vllm.normalise import HistogramSeries, NormalisedFamily, ScalarSeries
from streamobs.collectors.vllm.parse import ParsedFamily
from streamobs.collectors.vllm.scrape import (
    ServerView,
    VllmSnapshot,
    redact_url,
    scrape_vllm,
    server_view,
    snapshot_from_text,
)

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
