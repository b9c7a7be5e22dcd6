"""``streamobs doctor``: its flags and what it prints. Exit 0 when every check passes (or
warns, is inconclusive or skipped), 1 when any fails or the run cannot start, 2 for bad
input."""

from __future__ import annotations

import argparse
import math
import sys

from streamobs.credential_flags import add_credential_arguments
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
from streamobs.secret import BasicAuth, SecretError, load_api_key, load_secret

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
    add_credential_arguments(parser)
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
        basic_auth=basic_auth_from(args),
        long_stream=args.long_stream,
        timeout=args.timeout,
        skip=frozenset(args.skip or ()),
        traces_receiver=args.traces_receiver,
    )


def basic_auth_from(args: argparse.Namespace) -> BasicAuth | None:
    """``--basic-auth-user`` with one password flag, loaded and checked as ``streamobs
    probe`` and the config load them; SecretError naming the flag, never a value."""
    user = args.basic_auth_user
    env_var, file_path = args.basic_auth_password_env, args.basic_auth_password_file
    if user is None and env_var is None and file_path is None:
        return None
    if user is None:
        raise SecretError("--basic-auth-user: required with a basic-auth password")
    if args.api_key_env or args.api_key_file:
        key = "--api-key-env" if args.api_key_env else "--api-key-file"
        raise SecretError(
            f"--basic-auth-user: not together with {key} "
            "(one Authorization header: an API key or basic auth)"
        )
    if env_var and file_path:
        raise SecretError(
            "--basic-auth-password-env: not together with --basic-auth-password-file (one password)"
        )
    flag = "--basic-auth-password-env" if env_var else "--basic-auth-password-file"
    try:
        password = load_secret(env_var, file_path, "basic-auth password")
    except SecretError as exc:
        raise SecretError(f"{flag}: {exc}") from None
    if password is None:
        raise SecretError(
            "--basic-auth-user: no password (set --basic-auth-password-file or "
            "--basic-auth-password-env)"
        )
    try:
        return BasicAuth(user, password)
    except SecretError as exc:  # the user name: the password was checked as it was loaded
        raise SecretError(f"--basic-auth-user: {exc}") from None


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
