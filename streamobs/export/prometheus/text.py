"""The text exposition format, fast where it has to be: a thousand targets' series.

``generate_latest`` formats every sample of every family on every scrape, through
``Metric``/``Sample`` objects; at a thousand targets that is over a second. A collector
that keeps its own series can instead offer ``render_text()``: lines it formats itself
(and caches per target until that target's next result). ``render_registry`` takes those
as they are and formats every other collector as ``generate_latest`` does, in registry
order, so the output is byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import metrics as _metrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


def number(value: float) -> str:
    """A sample value as generate_latest writes it (Go's float formatting)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def created_series_enabled() -> bool:
    """Whether counters and histograms carry ``_created`` samples (off in ``streamobs run``)."""
    return bool(getattr(_metrics, "_use_created", True))


def escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(pairs: Sequence[tuple[str, str]]) -> str:
    """``a="1",b="2"``: names sorted, as generate_latest writes them."""
    return ",".join(f'{name}="{escape_value(value)}"' for name, value in sorted(pairs))


def header(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def histogram_lines(
    name: str, labels: str, edges: Sequence[str], counts: Sequence[float], total: float
) -> str:
    """One histogram child: cumulative buckets, count, sum. ``labels`` are the child's
    other labels, already formatted; ``le`` sorts first among ours (model, phase, target)."""
    lines = []
    cumulative = 0.0
    for edge, count in zip(edges, counts, strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{edge}",{labels}}} {number(cumulative)}\n')
    lines.append(f"{name}_count{{{labels}}} {number(cumulative)}\n")
    lines.append(f"{name}_sum{{{labels}}} {number(total)}\n")
    return "".join(lines)


def render_registry(registry: CollectorRegistry) -> bytes:
    """What ``generate_latest(registry)`` returns, taking ``render_text()`` of collectors
    that have one instead of formatting their families sample by sample."""
    collectors = _collectors(registry)
    if collectors is None:
        return generate_latest(registry)
    parts: list[bytes] = []
    for collector in collectors:
        fast = getattr(collector, "render_text", None)
        text = fast() if fast is not None else None
        parts.append(text.encode() if text is not None else generate_latest(collector))
    return b"".join(parts)


def _collectors(registry: CollectorRegistry) -> list[Collector] | None:
    """The registry's collectors in registration order (the order ``collect()`` walks),
    or None when this prometheus_client keeps them otherwise (then the plain path)."""
    lock = getattr(registry, "_lock", None)
    names = getattr(registry, "_collector_to_names", None)
    if lock is None or not isinstance(names, dict) or getattr(registry, "_target_info", None):
        return None
    with lock:
        return list(names)
