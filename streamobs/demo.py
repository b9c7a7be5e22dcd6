"""``streamobs demo``: the embedded default. The simulator and the daemon wired together on
this machine (no GPU, no vLLM, no network), with a live view of what the probes see.

Faults can be injected from the start (``--fault error_event=0.2``, ``--slow-ttft 3``,
``--buffered``), after a delay (``--fault-after 30``) so the change is visible, or at any
time with ``curl -X POST <simulator>/sim/config -d '{"ttft": 3}'``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType

from streamobs.config import ConfigError, parse_config
from streamobs.daemon import Daemon
from streamobs.report import ms
from streamobs.simulator import FAULTS, Simulator, SimulatorConfig
from streamobs.simulator.engines import ENGINE_KINDS
from streamobs.simulator.engines import KINDS as ENGINE_METRICS
from streamobs.stats import quantile
from streamobs.status import TargetStatus


def parse_faults(values: Sequence[str]) -> dict[str, float]:
    faults: dict[str, float] = {}
    for value in values:
        name, sep, raw = value.partition("=")
        name = name.strip()
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}: choose from {', '.join(FAULTS)}")
        try:
            probability = float(raw) if sep else 1.0
        except ValueError:
            raise ValueError(f"fault {name}: {raw!r} is not a probability") from None
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault {name}: probability must be within [0, 1]")
        faults["p_" + name] = probability
    return faults


def fault_changes(args: argparse.Namespace) -> dict[str, object]:
    changes: dict[str, object] = dict(parse_faults(args.fault))
    if args.slow_ttft is not None:
        changes["ttft"] = args.slow_ttft
    if args.buffered:
        changes["buffered"] = True
    return changes


def _spread(values: list[float]) -> str:
    if not values:
        return "       -        -"
    return f"{ms(quantile(values, 0.5)):>9} {ms(quantile(values, 0.99)):>9}"


def render_view(status: TargetStatus, metrics_url: str, note: str) -> str:
    recent = status.recent
    ok = [r for r in recent if r.ok]
    outcomes = Counter(r.outcome.value for r in recent)
    buffered = sum(1 for r in recent if r.delivery is not None and r.delivery.buffered)
    slo = status.target.slo
    lines = [
        f"streamobs demo — {status.target.target.request_url}   (Ctrl-C stops)",
        f"metrics: {metrics_url}   {note}",
        "",
        f"last {len(recent)} probes       p50       p99",
        f"  TTFT        {_spread([r.first_token_ns for r in ok if r.first_token_ns is not None])}",
        f"  TPOT        {_spread([r.tpot_ns for r in ok if r.tpot_ns is not None])}",
        f"  e2e         {_spread([r.done_ns for r in ok if r.done_ns is not None])}",
        "",
        "  outcomes    " + (", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-"),
        f"  buffered    {buffered} of {len(recent)}"
        + ("   <-- BUFFERED STREAM" if buffered else ""),
    ]
    sli = status.sli
    if sli is not None:
        burn = (1 - sli) / (1 - slo.objective)
        lines.append(
            f"  TTFT SLO    {sli:.1%} under {slo.ttft_seconds:g} s "
            f"(objective {slo.objective:.1%}), burn rate {burn:.1f}x"
        )
    if status.last_error is not None:
        lines.append(f"  last error  {status.last_error.outcome.value}: {status.last_error.error}")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    try:
        changes = fault_changes(args)
        simulator = Simulator(
            SimulatorConfig(
                model="demo-model",
                engine=args.engine,
                ttft=args.ttft,
                itl=args.itl,
                stall_seconds=30,
            )
        )
    except ValueError as exc:
        print(f"streamobs demo: error: {exc}", file=sys.stderr)
        return 2
    config = {
        "web": {"listen_address": args.listen_address},
        "shutdown_grace": "2s",
        "targets": [
            {
                "name": "demo",
                "url": simulator.url,
                # The simulated engine's /metrics, where that kind serves it.
                "metrics_url": simulator.url + ENGINE_METRICS[args.engine].metrics_path,
                "interval": f"{args.interval}s",
                "max_tokens": args.max_tokens,
                "timeouts": {"headers": "5s", "first_token": "10s", "total": "20s"},
                "slo": {"ttft": f"{args.slo_ttft}s"},
            }
        ],
    }
    try:
        daemon = Daemon(parse_config(config))
    except (ConfigError, OSError) as exc:
        simulator.stop()
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"streamobs demo: error: cannot serve on {args.listen_address}: {detail}",
              file=sys.stderr)  # fmt: skip
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    simulator.start()
    daemon.start()
    metrics_url = f"http://127.0.0.1:{daemon.web.port}/metrics"
    started = time.monotonic()
    faults_applied = not changes or args.fault_after == 0
    if changes and faults_applied:
        simulator.reconfigure(**changes)
    live = sys.stdout.isatty()

    def show(note: str) -> None:
        view = render_view(daemon.runtime.status.snapshot()[0], metrics_url, note)
        # In a terminal redraw in place; in a pipe or a log, print blocks.
        print(("\x1b[H\x1b[2J" + view) if live else view + "\n", flush=True)

    try:
        while not stop.wait(1.0 if live else 5.0):
            elapsed = time.monotonic() - started
            if not faults_applied and elapsed >= args.fault_after:
                simulator.reconfigure(**changes)
                faults_applied = True
            if args.duration is not None and elapsed >= args.duration:
                break
            if changes and not faults_applied:
                show(f"faults in {args.fault_after - elapsed:.0f} s: {changes}")
            else:
                show(f"faults: {changes or 'none'}")
    finally:
        daemon.stop()
        simulator.stop()
    show("stopped")
    return 0


def add_arguments(demo: argparse.ArgumentParser, positive_seconds: Callable[[str], float]) -> None:
    seconds = positive_seconds
    demo.add_argument("--interval", type=seconds, default=1.0, help="between probes (s)")
    demo.add_argument("--duration", type=seconds, help="stop after this many seconds")
    demo.add_argument("--ttft", type=seconds, default=0.2, help="simulated TTFT (s)")
    demo.add_argument("--itl", type=seconds, default=0.02, help="simulated ITL (s)")
    demo.add_argument("--max-tokens", type=int, default=32, help="output limit of each probe")
    demo.add_argument("--slo-ttft", type=seconds, default=0.5, help="TTFT SLO threshold (s)")
    demo.add_argument("--listen-address", default="127.0.0.1:9464", help="where /metrics is served")
    demo.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=P",
        help=f"inject a fault with probability P ({', '.join(FAULTS)}; repeatable)",
    )
    demo.add_argument(
        "--engine",
        choices=ENGINE_KINDS,
        default="vllm",
        help="whose /metrics the simulated server serves (default vllm)",
    )
    demo.add_argument("--slow-ttft", type=seconds, help="degrade TTFT to this many seconds")
    demo.add_argument("--buffered", action="store_true", help="deliver streams buffered")
    demo.add_argument(
        "--fault-after", type=float, default=0.0, help="apply the faults after this many seconds"
    )
