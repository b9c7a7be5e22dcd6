"""The engine collector's core: scrape an engine's ``/metrics`` into an immutable snapshot.

A snapshot keeps the engine's own families (for re-exposing them unchanged), its kind
(configured, or recognised from the families) and the normalised series of that kind
(``kinds.py``). Scraping never raises for anything the server does: every failure becomes
``up=False`` with a one-line error. Exporting is ``export.EngineExporter``'s job; it only
reads snapshots.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from streamobs.collectors.engines.http import ScrapeError, fetch_metrics_text
from streamobs.collectors.engines.kinds import detect, kind_spec
from streamobs.collectors.engines.normalise import HistogramSeries, NormalisedFamily, normalise
from streamobs.collectors.engines.parse import ParsedFamily, parse_families
from streamobs.secret import redact

_ERROR_LIMIT = 200


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """One scrape of one engine. ``url`` has any password masked; ``scraped_at`` is
    wall-clock seconds when the scrape started; families are empty when ``up`` is False.
    ``kind`` is None when it was not configured and the families did not tell it
    (``kind_unknown`` says why): the families are then re-exposed, not normalised."""

    url: str
    up: bool
    error: str | None
    duration_seconds: float
    scraped_at: float
    families: tuple[ParsedFamily, ...] = ()
    normalised: tuple[NormalisedFamily, ...] = ()
    kind: str | None = None
    kind_unknown: str = ""

    def normalised_family(self, name: str) -> NormalisedFamily | None:
        """A normalised family by its exposed name (``streamobs_engine_prompt_tokens_total``)."""
        for family in self.normalised:
            if family.spec.name == name:
                return family
        return None


def scrape_engine(
    url: str, *, timeout: float, max_bytes: int, kind: str | None = None
) -> EngineSnapshot:
    """GET ``url`` within ``timeout`` seconds overall, reading at most ``max_bytes``;
    ``kind`` None: recognise it from the families."""
    scraped_at = time.time()
    start_ns = time.perf_counter_ns()
    try:
        text = fetch_metrics_text(url, timeout=timeout, max_bytes=max_bytes)
        parsed = _parse(text, kind)
    except ScrapeError as exc:
        return _failed(url, str(exc), start_ns, scraped_at)
    except Exception as exc:  # a bug must not take the scrape loop down either
        return _failed(url, f"unexpected error: {type(exc).__name__}: {exc}", start_ns, scraped_at)
    return EngineSnapshot(
        redact_url(url), True, None, _seconds_since(start_ns), scraped_at, *parsed
    )


def snapshot_from_text(
    text: str,
    *,
    kind: str | None = None,
    url: str = "",
    duration_seconds: float = 0.0,
    scraped_at: float | None = None,
) -> EngineSnapshot:
    """A snapshot of metrics text obtained some other way (a file, a test, a benchmark)."""
    when = time.time() if scraped_at is None else scraped_at
    try:
        parsed = _parse(text, kind)
    except ScrapeError as exc:
        return EngineSnapshot(redact_url(url), False, _one_line(str(exc)), duration_seconds, when)
    return EngineSnapshot(redact_url(url), True, None, duration_seconds, when, *parsed)


def _parse(
    text: str, kind: str | None
) -> tuple[tuple[ParsedFamily, ...], tuple[NormalisedFamily, ...], str | None, str]:
    try:
        families = parse_families(text)
    except Exception as exc:
        raise ScrapeError(f"cannot parse metrics text: {exc}") from exc
    if not families:
        raise ScrapeError("no metrics in response")
    unknown = ""
    if kind is None:
        detection = detect(f.exposed_name for f in families)
        kind, unknown = detection.kind, detection.reason
    normalised = normalise(families, kind_spec(kind)) if kind is not None else ()
    return families, normalised, kind, unknown


def _failed(url: str, error: str, start_ns: int, scraped_at: float) -> EngineSnapshot:
    return EngineSnapshot(
        url=redact_url(url),
        up=False,
        error=_one_line(error),
        duration_seconds=_seconds_since(start_ns),
        scraped_at=scraped_at,
    )


def _seconds_since(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e9


def _one_line(message: str) -> str:
    """Server bytes can end up in a message (parser errors quote the line): keep it one
    short printable line."""
    printable = "".join(c if c.isprintable() else " " for c in message)
    return redact(" ".join(printable.split()), max_length=_ERROR_LIMIT)


def redact_url(url: str) -> str:
    """``url`` with the password of any ``user:password@`` part masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


@dataclass(frozen=True, slots=True)
class ServerView:
    """What the engine reports about itself that client-side measurements are compared with.
    Both are cumulative: take the difference between two snapshots for a window."""

    generation_tokens_total: float | None
    time_to_first_token: HistogramSeries | None  # summed over engines; labels are ()


def server_view(snapshot: EngineSnapshot, model: str | None = None) -> ServerView:
    """Generation-token counter and TTFT histogram of one model (or all), over engines."""
    tokens = snapshot.normalised_family("streamobs_engine_generation_tokens_total")
    ttft = snapshot.normalised_family("streamobs_engine_time_to_first_token_seconds")
    token_values = [s.value for s in tokens.scalars if _matches(s.labels, model)] if tokens else []
    histograms = [h for h in ttft.histograms if _matches(h.labels, model)] if ttft else []
    return ServerView(
        generation_tokens_total=math.fsum(token_values) if token_values else None,
        time_to_first_token=_sum_histograms(histograms),
    )


def _matches(labels: tuple[str, ...], model: str | None) -> bool:
    return model is None or (bool(labels) and labels[0] == model)


def _sum_histograms(histograms: Iterable[HistogramSeries]) -> HistogramSeries | None:
    series = list(histograms)
    if not series:
        return None
    bounds = series[0].bounds()
    if any(h.bounds() != bounds for h in series[1:]):
        return None  # engines with different buckets cannot be added up
    buckets = tuple(
        (bound, math.fsum(h.buckets[i][1] for h in series)) for i, bound in enumerate(bounds)
    )
    return HistogramSeries(
        labels=(),
        buckets=buckets,
        count=math.fsum(h.count for h in series),
        sum=math.fsum(h.sum for h in series),
    )
