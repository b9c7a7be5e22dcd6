"""Compression: does the path compress the event stream for a client that accepts gzip (as
every SDK does), and does that hold tokens back? A client sending ``identity`` never sees it."""

from __future__ import annotations

from typing import Any

from streamobs.doctor.context import Context
from streamobs.doctor.figures import stream_figures, stream_line
from streamobs.doctor.verdict import CheckResult, Verdict
from streamobs.probe import ProbeResult

NAME = "compression"
# A first token later than this (and later than the uncompressed one took) is a delay.
DELAY_FLOOR_SECONDS = 0.25

FIX = (
    "nginx: `gzip off;` in the location serving /v1/ (or remove text/event-stream from "
    "gzip_types); other proxies: exclude text/event-stream from response compression"
)


def _compressed(result: ProbeResult) -> bool:
    return (result.content_encoding or "").strip().lower() not in ("", "identity")


def _buffered(result: ProbeResult) -> bool:
    return result.delivery is not None and result.delivery.buffered


def evaluate(gzip: ProbeResult, identity: ProbeResult) -> CheckResult:
    details = (
        stream_line("gzip", gzip) + "   (Accept-Encoding: gzip, deflate)",
        stream_line("identity", identity) + "   (Accept-Encoding: identity)",
    )
    evidence: dict[str, Any] = {
        "accept_gzip": stream_figures(gzip),
        "accept_identity": stream_figures(identity),
    }

    def result(verdict: Verdict, summary: str, fix: str | None = None) -> CheckResult:
        return CheckResult(NAME, verdict, summary, details, evidence, fix)

    if not (gzip.ok and identity.ok):
        return result(Verdict.INCONCLUSIVE, "a stream through the path failed; nothing to compare")
    if _compressed(identity):
        return result(
            Verdict.FAIL,
            f"compresses the stream (Content-Encoding: {identity.content_encoding}) even for a "
            "client that asked for identity",
            FIX,
        )
    if not _compressed(gzip):
        return result(
            Verdict.PASS, "the event stream is not compressed, even when gzip is accepted"
        )
    encoding = f"Content-Encoding: {gzip.content_encoding}"
    assert gzip.first_token_ns is not None and identity.first_token_ns is not None
    ttft_gzip, ttft_plain = gzip.first_token_ns / 1e9, identity.first_token_ns / 1e9
    delay = ttft_gzip - ttft_plain
    evidence["ttft_delay_seconds"] = round(delay, 4)
    held = _buffered(gzip) and not _buffered(identity)
    if held or delay > max(DELAY_FLOOR_SECONDS, ttft_plain):
        return result(
            Verdict.FAIL,
            f"compresses text/event-stream ({encoding}) and that holds tokens back: TTFT "
            f"{ttft_gzip:.3f} s with gzip vs {ttft_plain:.3f} s without",
            FIX,
        )
    if _buffered(gzip):
        return result(
            Verdict.WARN,
            f"compresses text/event-stream ({encoding}); the stream is held back with or "
            "without it (see buffering)",
            FIX,
        )
    return result(
        Verdict.WARN,
        f"compresses text/event-stream ({encoding}) but still streams; it saves little on "
        "small events, and any buffering hop in front will then hold tokens back",
        FIX,
    )


def run(ctx: Context) -> CheckResult:
    return evaluate(ctx.probes.path(), ctx.probes.path_identity())
