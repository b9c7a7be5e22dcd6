"""The text exposition format, fast where it has to be: a thousand targets' series.

``generate_latest`` formats every sample of every family on every scrape, through
``Metric``/``Sample`` objects; at a thousand targets that is over a second. A collector
that keeps its own series can instead offer ``render_text()``: lines it formats itself
(and caches per target until that target's next result). ``render_registry`` takes those
as they are and formats every other collector as ``generate_latest`` does, in registry
order, so the output is byte for byte the same.
"""

from __future__ import annotations

import ctypes
import threading
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


def render_registry(registry: CollectorRegistry, after: bytes = b"") -> bytes:
    """What ``generate_latest(registry) + after`` returns, taking ``render_text()`` of
    collectors that have one instead of formatting their families sample by sample."""
    collectors = _collectors(registry)
    if collectors is None:
        return generate_latest(registry) + after
    parts: list[bytes] = []
    for collector in collectors:
        fast = getattr(collector, "render_text", None)
        text = fast() if fast is not None else None
        parts.append(text.encode() if text is not None else generate_latest(collector))
    parts.append(after)
    return b"".join(parts)


_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameters
_tuned = threading.Event()


def tune_allocator() -> None:
    """Once per process, before the web and probe threads start: at most 2 malloc arenas,
    and buffers of 1 MiB and more mapped and unmapped, never kept.

    At a thousand targets every scrape formats about 12 MB of text, on whichever web
    thread serves it, and frees the previous scrape's. glibc gives each thread an arena
    (up to 8 per core) and keeps freed memory in it, and raises its mmap threshold to
    the size of a freed mapping: measured, the resident size grew by 13-18 MB a scrape;
    with 2 arenas it levels off. Without glibc's mallopt: nothing to do."""
    if _tuned.is_set():
        return
    _tuned.set()
    try:
        # The process's own symbols: the C library it runs on, found without a search.
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
        if mallopt is not None:
            mallopt(_M_ARENA_MAX, 2)
            mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except OSError:
        pass


def _collectors(registry: CollectorRegistry) -> list[Collector] | None:
    """The registry's collectors in registration order (the order ``collect()`` walks),
    or None when this prometheus_client keeps them otherwise (then the plain path)."""
    lock = getattr(registry, "_lock", None)
    names = getattr(registry, "_collector_to_names", None)
    if lock is None or not isinstance(names, dict) or getattr(registry, "_target_info", None):
        return None
    with lock:
        return list(names)
