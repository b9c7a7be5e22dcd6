"""``streamobs demo``: the simulator and the prober wired together on this machine.

A first version of the embedded default: it needs no GPU, no vLLM and no network, and
shows what a probe sees while faults are injected into the simulated server.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque

from streamobs.probe.prober import run_probe
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import ProbeSpec, Timeouts, parse_target
from streamobs.report import describe_summary, one_line
from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.server import Simulator

FAULTS = (
    "http_500",
    "http_429",
    "error_event",
    "truncate",
    "reset",
    "stall",
    "hang",
    "malformed",
    "not_sse",
    "oversize",
)
WINDOW = 50


def parse_faults(values: list[str]) -> dict[str, float]:
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


def run_demo(args: argparse.Namespace) -> int:
    try:
        faults = parse_faults(args.fault)
        config = SimulatorConfig(
            model="demo-model",
            ttft=args.ttft,
            itl=args.itl,
            buffered=args.buffered,
            stall_seconds=5.0,
            **faults,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        print(f"streamobs demo: error: {exc}", file=sys.stderr)
        return 2
    timeouts = Timeouts(connect=2, headers=3, first_token=3, total=max(10.0, args.ttft * 4))
    stop = threading.Event()
    with Simulator(config).start() as simulator:
        spec = ProbeSpec(
            target=parse_target(simulator.url),
            model=config.model,
            max_tokens=args.max_tokens,
            timeouts=timeouts,
        )
        print(f"simulator listening on {simulator.url} (try: curl {simulator.url}/metrics)")
        print(f"probing {spec.target.request_url} every {args.interval:g} s; Ctrl-C stops")
        recent: deque[ProbeResult] = deque(maxlen=WINDOW)
        deadline = time.monotonic() + args.duration if args.duration else None
        index = 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                if deadline is not None and started >= deadline:
                    break
                result = run_probe(spec)
                index += 1
                recent.append(result)
                print(one_line(index, result), flush=True)
                if index % 10 == 0:
                    print(describe_summary(list(recent)), flush=True)
                pause = args.interval - (time.monotonic() - started)
                if pause > 0:
                    time.sleep(pause)
        except KeyboardInterrupt:
            pass
        if recent:
            print(describe_summary(list(recent)))
    return 0
