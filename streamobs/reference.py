"""The metric reference in the README, generated from the code so it cannot drift.

    python -m streamobs.reference           # print the Markdown
    python -m streamobs.reference --write   # replace the README's copy
    python -m streamobs.reference --check   # exit 1 when the README's copy is stale

Families come from the real exporters (a runtime fed one synthetic probe) and, for series
that need a live source to appear, from the same name tables the collectors use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from streamobs.collectors.engines.kinds import KINDS, KindSpec
from streamobs.collectors.engines.names import NORMALISED, SERIES_LABELS
from streamobs.collectors.gpu.names import DEVICE_LABELS, GPU_METRICS
from streamobs.config import parse_config
from streamobs.daemon import ReloadGauges, Runtime
from streamobs.export.prometheus.blackbox import probe_registry
from streamobs.ondemand import OnDemandProbes
from streamobs.probe.result import Delivery, Outcome, ProbeResult

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- metrics:start -->", "<!-- metrics:end -->"
_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


def sample_result() -> ProbeResult:
    ms = 1_000_000
    return ProbeResult(
        url="http://127.0.0.1:8000/v1/chat/completions",
        endpoint="chat",
        model="m",
        outcome=Outcome.OK,
        start_ns=0,
        started_at=0.0,
        connect_ns=ms,
        headers_ns=2 * ms,
        first_event_ns=3 * ms,
        first_token_ns=4 * ms,
        last_token_ns=5 * ms,
        done_ns=6 * ms,
        token_arrivals_ns=(4 * ms, 5 * ms),
        output_tokens=2,
        delivery=Delivery(3, 3, 1.0, 1, 0.0, False),
        http_status=200,
    )


def _exposed_name(metric: Metric) -> str:
    return metric.name + "_total" if metric.type == "counter" else metric.name


def _from_metrics(metrics: Iterable[Metric]) -> list[Family]:
    out = []
    for metric in metrics:
        labels: set[str] = set()
        for sample in metric.samples:
            labels.update(k for k in sample.labels if k != "le")
        out.append(Family(_exposed_name(metric), metric.type, tuple(sorted(labels)),
                          metric.documentation))  # fmt: skip
    return out


def daemon_families() -> list[Family]:
    config = parse_config(
        {
            # A second model with an SLO of its own: the streamobs_slo_* label model.
            "targets": [
                {
                    "name": "t",
                    "url": "http://127.0.0.1:8000",
                    "model": ["m", {"name": "m2", "slo": {"ttft": "1s"}}],
                }
            ],
            "collectors": {"gpu": {"enabled": True}},
        }
    )
    runtime = Runtime(config, probe=lambda spec: sample_result(), discover=lambda *a: "m")
    runtime.metrics.record("t", sample_result())
    registry = CollectorRegistry()
    ReloadGauges(registry)
    OnDemandProbes(lambda spec: sample_result(), lambda *a: "m", registry, max_concurrency=1)
    families = {
        f.name: f for f in _from_metrics([*registry.collect(), *runtime.registry.collect()])
    }
    for spec in NORMALISED:
        labels = tuple(sorted(("engine", "kind", *SERIES_LABELS, *spec.extra_labels)))
        families.setdefault(spec.name, Family(spec.name, spec.kind, labels, spec.documentation))
    for gpu in GPU_METRICS:
        labels = tuple(sorted((*DEVICE_LABELS, *gpu.labels)))
        families[gpu.name] = Family(gpu.name, gpu.kind, labels, gpu.documentation)
    return sorted(families.values(), key=lambda f: f.name)


def probe_endpoint_families() -> list[Family]:
    return sorted(_from_metrics(probe_registry(sample_result()).collect()), key=lambda f: f.name)


def _table(families: Iterable[Family]) -> list[str]:
    lines = ["| name | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for f in families:
        labels = ", ".join(f"`{label}`" for label in f.labels) or "-"
        text = f.help.replace("|", "\\|")
        lines.append(f"| `{f.name}` | {f.kind} | {labels} | {text} |")
    return lines


def _kind_table(kind: KindSpec) -> list[str]:
    """Where each normalised family comes from on one kind, and what it means there."""
    model = ", ".join(f"`{label}`" for label in kind.model_labels) or 'none (`model=""`)'
    lines = [
        f"**{kind.title}** (`kind: {kind.name}`; families "
        f"{', '.join(f'`{prefix}*`' for prefix in kind.prefixes)}"
        f" at `{kind.metrics_path}`; model from {model})",
        "",
        "| normalised family | from | on this kind |",
        "| --- | --- | --- |",
    ]
    for spec in NORMALISED:
        source = kind.sources.get(spec.name)
        if source is None:
            why = kind.absent.get(spec.name, "no equivalent").replace("|", "\\|")
            lines.append(f"| `{spec.name}` | - | absent: {why} |")
            continue
        names = ", then ".join(f"`{name}`" for name in source.names)
        if source.only:
            names += " " + ", ".join(f'`{k}="{v}"`' for k, v in source.only)
        note = source.note or "same meaning"
        if source.absent_when:
            note += f" (absent {source.absent_when})"
        note = note.replace("|", "\\|")
        lines.append(f"| `{spec.name}` | {names} | {note} |")
    return [*lines, ""]


def markdown() -> str:
    lines = [
        "Generated by `python -m streamobs.reference --write`; a test fails when this copy is",
        "stale. Histograms also expose `_bucket`, `_count` and `_sum`. vLLM's own `vllm:*`",
        "families are re-exposed unchanged beside these (`collectors.engines.reexpose`), and the",
        "daemon exposes the standard `process_*` and `python_*` families of its own process.",
        "",
        "### `/metrics` of `streamobs run`",
        "",
        *_table(daemon_families()),
        "",
        "### `/probe?target=...&module=...`",
        "",
        *_table(probe_endpoint_families()),
        "",
        "### Engine kinds",
        "",
        "Each engine kind's own families feed the `streamobs_engine_*` series by meaning;",
        "a family a kind has no equivalent for is absent (never filled with something",
        "else). With `kind: auto` (the default) the kind is recognised from the families'",
        "prefix; an exposition of no known kind, or of several, is re-exposed but not",
        "normalised, and the log says why once.",
        "",
        *(line for kind in KINDS for line in _kind_table(kind)),
    ]
    return "\n".join(lines)


def _replaced(readme: str, block: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"{README}: markers {START} / {END} are missing")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamobs.reference",
        description="the README's metric reference",
        allow_abbrev=False,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update README.md")
    group.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    if (args.write or args.check) and not README.is_file():
        # Installed from a wheel: there is no README beside the package to compare with.
        print(f"{parser.prog}: --write and --check work in a source checkout only "
              f"(no README.md at {README})", file=sys.stderr)  # fmt: skip
        return 2
    block = markdown()
    if args.write:
        README.write_text(_replaced(README.read_text(), block))
    elif args.check:
        readme = README.read_text()
        if _replaced(readme, block) != readme:
            print("README.md: the metric reference is stale; run "
                  "`python -m streamobs.reference --write`", file=sys.stderr)  # fmt: skip
            return 1
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
