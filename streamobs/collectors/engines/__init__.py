"""The vLLM collector: scrape vLLM's /metrics in the background, normalise, export."""

from streamobs.collectors.engines.export import EngineExporter
from streamobs.collectors.engines.names import NORMALISED, NormalisedSpec
from streamobs.collectors.engines.normalise import HistogramSeries, NormalisedFamily, ScalarSeries
from streamobs.collectors.engines.parse import ParsedFamily
from streamobs.collectors.engines.scrape import (
    EngineSnapshot,
    ServerView,
    redact_url,
    scrape_engine,
    server_view,
    snapshot_from_text,
)

__all__ = [
    "NORMALISED",
    "EngineExporter",
    "EngineSnapshot",
    "HistogramSeries",
    "NormalisedFamily",
    "NormalisedSpec",
    "ParsedFamily",
    "ScalarSeries",
    "ServerView",
    "redact_url",
    "scrape_engine",
    "server_view",
    "snapshot_from_text",
]
