"""Each probe's own server timing, from its ``llm_request`` span, as OTLP histograms.

The same values, the same probes (successful, exact client stamps) and the same bucket
edges as ``streamobs_probe_server_*_seconds`` and ``streamobs_probe_path_seconds`` on
``/metrics``, with the attributes of the Prometheus labels (``streamobs.target`` and
``gen_ai.request.model``). The SDK refuses negative histogram values, so a path time below
zero (client and server stamps a few microseconds apart in opposite directions) is recorded
as 0 here, where Prometheus keeps its sign.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.metrics import Histogram, Meter

from streamobs.export.otlp import names as n
from streamobs.export.otlp.health import AttributeValue, SeriesGuard
from streamobs.export.prometheus.server_timing import PATH, SERIES, bucket_edges
from streamobs.probe.result import ProbeResult
from streamobs.targets import TargetConfig
from streamobs.traces.records import ServerTiming

# Prometheus name suffix -> OTLP name.
NAMES: Mapping[str, str] = {
    "queue": n.PROBE_SERVER_QUEUE,
    "ttft": n.PROBE_SERVER_TTFT,
    "prefill": n.PROBE_SERVER_PREFILL,
    "decode": n.PROBE_SERVER_DECODE,
    "e2e": n.PROBE_SERVER_E2E,
    PATH: n.PROBE_PATH,
}
_PATH_HELP = (
    "Path time of each probe: client TTFT minus the server's TTFT of the same request "
    "(network, proxies and gateways between streamobs and the server)."
)


def server_timing_boundaries(
    buckets: Mapping[str, tuple[float, ...]],
) -> dict[str, tuple[float, ...]]:
    """OTLP name -> the edges of the matching Prometheus histogram."""
    edges = bucket_edges(buckets)
    return {name: edges[suffix] for suffix, name in NAMES.items()}


class ServerTimingInstruments:
    """The histograms on ``meter``; ``record()`` is called once per probe joined to its span."""

    def __init__(self, meter: Meter, guard: SeriesGuard) -> None:
        self._guard = guard
        helps = {suffix: help_text for suffix, help_text, _client, _field in SERIES}
        helps[PATH] = _PATH_HELP
        self._fields = tuple((suffix, field) for suffix, _help, _client, field in SERIES)
        self.histograms: dict[str, Histogram] = {
            suffix: meter.create_histogram(name, n.SECONDS, helps[suffix])
            for suffix, name in NAMES.items()
        }

    def record(self, target: TargetConfig, result: ProbeResult, timing: ServerTiming) -> None:
        if not result.ok or not result.exact:
            return  # as on /metrics: only latencies the client can vouch for
        attributes: dict[str, AttributeValue] = {
            n.TARGET: target.name,
            n.REQUEST_MODEL: result.model,
        }
        span = timing.span
        values: list[tuple[str, float | None]] = [
            (suffix, getattr(span, field)) for suffix, field in self._fields
        ]
        path = timing.path_seconds
        values.append((PATH, None if path is None else max(path, 0.0)))
        for suffix, value in values:
            if value is not None and self._guard.admit(NAMES[suffix], attributes):
                self.histograms[suffix].record(value, attributes)
