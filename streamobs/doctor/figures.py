"""Probe results as the numbers and lines the checks show side by side."""

from __future__ import annotations

from typing import Any

from streamobs.probe import ProbeResult


def seconds(ns: int | float | None) -> float | None:
    return None if ns is None else round(ns / 1e9, 4)


def stream_figures(result: ProbeResult) -> dict[str, Any]:
    delivery = result.delivery
    return {
        "outcome": result.outcome.value,
        "error": result.error,
        "ttft_seconds": seconds(result.first_token_ns),
        "e2e_seconds": seconds(result.done_ns),
        # Events carrying output, as they arrived; tokens as the server's usage counts them
        # (one event may carry several, and a token inside a UTF-8 character none).
        "content_events": result.content_events,
        "output_tokens": result.output_tokens,
        "output_tokens_source": result.output_tokens_source,
        "largest_burst": delivery.largest_burst if delivery else None,
        "burst_share": round(delivery.burst_share, 3) if delivery else None,
        "events_per_read": round(delivery.events_per_read, 2) if delivery else None,
        "buffered": delivery.buffered if delivery else None,
        "content_encoding": result.content_encoding,
    }


def stream_line(label: str, result: ProbeResult) -> str:
    """One aligned line: TTFT, e2e and how the content events were delivered."""
    if not result.ok:
        return f"{label:<9} {result.outcome.value}: {result.error or 'no stream'}"
    f = stream_figures(result)
    parts = [
        f"TTFT {_s(f['ttft_seconds'])}",
        f"e2e {_s(f['e2e_seconds'])}",
        f"{f['content_events']} content events",
    ]
    if result.output_tokens is not None and result.output_tokens_source == "usage":
        parts.append(f"{result.output_tokens} tokens (usage)")
    if result.delivery is not None:
        parts += [
            f"largest burst {f['largest_burst']}",
            f"in bursts {f['burst_share']:.0%}",
            f"events/read {f['events_per_read']:.2f}",
        ]
    if result.content_encoding:
        parts.append(f"Content-Encoding {result.content_encoding}")
    return f"{label:<9} " + ", ".join(parts)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"
