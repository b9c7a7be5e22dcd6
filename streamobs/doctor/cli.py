"""``streamobs doctor``: its flags and what it prints. Exit 0 when every check passes (or
warns, is inconclusive or skipped), 1 when any fails or the run cannot start, 2 for bad
input."""

from __future__ import annotations

import argparse
import math
import sys

from streamobs.doctor.options import (
    CHECKS,
    DEFAULT_LONG_STREAM,
    DEFAULT_TIMEOUT,
    SHORT_BUDGET_TIMEOUTS,
    DoctorOptions,
)
from streamobs.doctor.report import footer, format_check, header, render_json
from streamobs.doctor.runner import Report, run_doctor
from streamobs.probe import TargetError, parse_target
from streamobs.probe.spec import ENDPOINTS
from streamobs.secret import SecretError, load_api_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "streamobs doctor"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Diagnose the path to an OpenAI-compatible streaming server: buffering, compression, "
        "headers, error replies, disconnect propagation and long streams."
    )
    parser.add_argument("url", metavar="URL", help="the URL clients use, e.g. through a proxy")
    parser.add_argument(
        "--direct", metavar="URL", help="the server itself, bypassing the path, for comparison"
    )
    parser.add_argument(
        "--metrics",
        metavar="URL",
        help="the server's vLLM /metrics (default: /metrics on --direct's host, else URL's)",
    )
    parser.add_argument(
        "--endpoint",
        choices=ENDPOINTS,
        help="protocol to check when the URL does not name one (default chat)",
    )
    parser.add_argument("--model", help="model to request (default: first from /v1/models)")
    parser.add_argument("--api-key-env", metavar="VAR", help="read the bearer token from $VAR")
    parser.add_argument("--api-key-file", metavar="PATH", help="read the bearer token from PATH")
    parser.add_argument(
        "--long-stream",
        type=_seconds,
        default=DEFAULT_LONG_STREAM,
        metavar="SECONDS",
        help=f"how long the long-stream check's responses last (default {DEFAULT_LONG_STREAM:g},"
        " beyond the common 60 s proxy read timeout)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=CHECKS,
        metavar="CHECK",
        help=f"do not run this check (repeatable): {', '.join(CHECKS)}",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--traces-receiver",
        metavar="ADDR",
        help="receive the server's own spans on ADDR (host:port for OTLP/HTTP, "
        "grpc://host:port for gRPC; vllm serve --otlp-traces-endpoint pointing there): the "
        "disconnect check then counts the tokens of each abandoned request from its span",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on each request (default {DEFAULT_TIMEOUT:g}); the checks but long-stream "
        f"share {SHORT_BUDGET_TIMEOUTS:g}x this, long-stream takes at most 1.5x --long-stream "
        "plus this",
    )


def options_from(args: argparse.Namespace) -> DoctorOptions:
    """The validated options; TargetError or SecretError with one human line otherwise."""
    target = parse_target(args.url, args.endpoint)
    direct = parse_target(args.direct, target.endpoint) if args.direct else None
    return DoctorOptions(
        target=target,
        direct=direct,
        metrics_url=args.metrics,
        model=args.model,
        api_key=load_api_key(args.api_key_env, args.api_key_file),
        long_stream=args.long_stream,
        timeout=args.timeout,
        skip=frozenset(args.skip or ()),
        traces_receiver=args.traces_receiver,
    )


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from(args)
    except (TargetError, SecretError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        report = run_doctor(options)
        print(render_json(report))
        return report.exit_code
    return _run_live(options)


def _run_live(options: DoctorOptions) -> int:
    """Text output, each check printed as soon as it is known (a run takes a while)."""

    def show(text: str) -> None:
        print(text, flush=True)

    def on_model(model: str, context: int | None) -> None:
        show(f"  model   {model}" + (f" (context {context} tokens)" if context else ""))

    first = Report(
        url=options.target.request_url,
        direct=options.direct.request_url if options.direct else None,
        metrics_url=options.scrape_url,
        model=None,
        checks=(),
        seconds=0.0,
    )
    show(header(first))
    report = run_doctor(
        options, on_model=on_model, on_result=lambda check: show("\n" + format_check(check))
    )
    if report.error:
        print(f"{PROG}: error: {report.error}", file=sys.stderr)
        return report.exit_code
    show("\n" + footer(report))
    return report.exit_code
