"""Buffering: do tokens reach the client as they are generated, or held back and burst?"""

from __future__ import annotations

from typing import Any

from streamobs.doctor.context import Context
from streamobs.doctor.figures import stream_figures, stream_line
from streamobs.doctor.verdict import CheckResult, Verdict
from streamobs.probe import ProbeResult
from streamobs.probe.delivery import MIN_TOKENS_FOR_VERDICT

NAME = "buffering"
# Not buffered as a whole, but this share of tokens arriving together deserves a look.
WARN_BURST_SHARE = 0.25

FIX_PATH = (
    "nginx: `proxy_buffering off;` and `gzip off;` (or remove text/event-stream from "
    "gzip_types) in the location serving /v1/; other proxies: turn response buffering off "
    'for /v1/ (ingress-nginx: nginx.ingress.kubernetes.io/proxy-buffering: "off")'
)
FIX_COMPRESSED = (
    "stop compressing event streams: nginx: `gzip off;` (or remove text/event-stream from "
    "gzip_types) in the location serving /v1/, and `proxy_buffering off;`; other proxies: "
    "no {encoding} for text/event-stream and no response buffering for /v1/"
)
FIX_SERVER = (
    "the stream is already held back at the direct URL: look at the server, or at what "
    "sits between it and the direct URL, before the proxy"
)
FIX_NO_STREAM = "make one streaming request through URL work first: `streamobs probe URL`"


def evaluate(path: ProbeResult, direct: ProbeResult | None) -> CheckResult:
    details = [stream_line("path", path)]
    evidence: dict[str, Any] = {"path": stream_figures(path)}
    if direct is not None:
        details.append(stream_line("direct", direct))
        evidence["direct"] = stream_figures(direct)
        if path.ok and direct.ok and path.first_token_ns and direct.first_token_ns:
            added = (path.first_token_ns - direct.first_token_ns) / 1e9
            evidence["ttft_added_by_path_seconds"] = round(added, 4)
            details.append(f"the path adds {added * 1000:+.1f} ms to TTFT")

    def result(verdict: Verdict, summary: str, fix: str | None = None) -> CheckResult:
        return CheckResult(NAME, verdict, summary, tuple(details), evidence, fix)

    if not path.ok:
        if direct is not None and not direct.ok:
            return result(Verdict.INCONCLUSIVE, "no stream through the path nor directly")
        return result(
            Verdict.FAIL,
            f"no complete stream through the path ({path.outcome.value})",
            FIX_NO_STREAM,
        )
    delivery = path.delivery
    if delivery is None or path.content_events < MIN_TOKENS_FOR_VERDICT:
        return result(
            Verdict.INCONCLUSIVE,
            f"too few content events to judge delivery ({path.content_events})",
        )
    events = path.content_events
    shape = (
        f"{delivery.largest_burst} of {events} content events arrived together, "
        f"{delivery.burst_share:.0%} in bursts"
    )
    if delivery.buffered:
        direct_delivery = direct.delivery if direct is not None and direct.ok else None
        if direct_delivery is not None and direct_delivery.buffered:
            return result(Verdict.FAIL, f"held back already at the direct URL: {shape}", FIX_SERVER)
        if path.first_token_ns and path.done_ns:
            ratio = path.first_token_ns / path.done_ns
            evidence["ttft_share_of_e2e"] = round(ratio, 3)
            shape += f"; the first token came at {ratio:.0%} of the whole stream's time"
        if direct_delivery is not None:
            shape += f" (directly: largest burst {direct_delivery.largest_burst})"
        encoding = path.content_encoding
        if encoding:
            details.append(
                f"the path compresses the stream (Content-Encoding: {encoding}), "
                "which makes nginx hold it in its buffers"
            )
            return result(
                Verdict.FAIL,
                f"the path compresses the stream with {encoding} and that holds it back: {shape}",
                FIX_COMPRESSED.format(encoding=encoding),
            )
        return result(Verdict.FAIL, f"tokens are held back and burst: {shape}", FIX_PATH)
    if path.timing.degraded is not None:
        # Bursts it saw may be its own lateness, and bursts it missed unvouched: no verdict.
        evidence["timing_degraded"] = path.timing.degraded.value
        evidence["timing_max_error_seconds"] = path.timing.max_error_ns / 1e9
        return result(
            Verdict.INCONCLUSIVE,
            "streamobs itself read too late to judge delivery "
            f"({path.timing.degraded.value}, stamps off by up to "
            f"{path.timing.max_error_ns / 1e6:.1f} ms): run it with more CPU",
        )
    if delivery.burst_share >= WARN_BURST_SHARE:
        return result(Verdict.WARN, f"some tokens arrive in bursts: {shape}", FIX_PATH)
    return result(Verdict.PASS, f"tokens arrive as generated: {shape}")


def run(ctx: Context) -> CheckResult:
    return evaluate(ctx.probes.path(), ctx.probes.direct())
