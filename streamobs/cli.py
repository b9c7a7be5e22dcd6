"""The ``streamobs`` command. Every long flag can also come from ``STREAMOBS_<FLAG>``
(dashes as underscores); a flag on the command line wins over the environment."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from streamobs import __version__
from streamobs.collectors.registry import COLLECTORS
from streamobs.config import (
    Config,
    ConfigError,
    Overrides,
    load_config,
    probe_target,
    single_target_config,
    target_names,
)
from streamobs.credential_flags import add_credential_arguments
from streamobs.probe.batch import BatchInterrupted, run_batch
from streamobs.probe.models import ModelDiscoveryError, api_path_problem, discover_model
from streamobs.probe.result import ProbeResult
from streamobs.probe.spec import (
    DEFAULT_ACCEPT_ENCODING,
    ENDPOINTS,
)
from streamobs.report import (
    ERROR_CHARS,
    ServerSpans,
    describe,
    describe_server,
    describe_summary,
    one_line,
    redact_result,
    to_json,
)
from streamobs.secret import redact
from streamobs.traces.service import TracesService
from streamobs.traces.settings import one_shot_settings
from streamobs.web.webconfig import load_web_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, never a usage dump, and a
    flag is only ever its whole name (``--max-token`` is not ``--max-tokens``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _shown_default(action: argparse.Action) -> bool:
    """Whether ``--help`` should say the flag's default: not for switches, nor unset ones."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return False
    return action.default not in (None, [], argparse.SUPPRESS)


def _document(action: argparse.Action, env: str) -> None:
    """Append the default and the environment variable to the flag's help, once."""
    help_text = action.help or ""
    extras = []
    if _shown_default(action) and "default" not in help_text.lower():
        extras.append("default: %(default)s")
    extras.append(f"env {env}")
    action.help = f"{help_text} ({'; '.join(extras)})" if help_text else "; ".join(extras)


def _apply_env(
    parser: argparse.ArgumentParser,
    prefix: str = "STREAMOBS_",
    only: frozenset[str] | None = None,
) -> None:
    """Turn ``STREAMOBS_*`` variables into defaults, validated like the flags themselves,
    and say in ``--help`` which variable each flag reads and what its default is."""
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        if only is not None and action.dest not in only:
            continue
        name = prefix + action.dest.upper()
        _document(action, name)
        raw = os.environ.get(name)
        if raw is None:
            continue
        value: Any
        if isinstance(action, argparse.BooleanOptionalAction):
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                parser.error(f"{name}={raw!r}: expected true or false")
            value = lowered in _TRUE
        elif isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            lowered = raw.strip().lower()
            if lowered not in _TRUE | _FALSE:
                parser.error(f"{name}={raw!r}: expected true or false")
            truthy = lowered in _TRUE
            value = truthy if isinstance(action, argparse._StoreTrueAction) else not truthy
        elif isinstance(action, argparse._AppendAction):
            value = [line for line in raw.splitlines() if line.strip()]
        else:
            convert = action.type if callable(action.type) else str
            try:
                value = convert(raw)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"{name}={raw!r}: {exc}")
            if action.choices is not None and value not in action.choices:
                parser.error(f"{name}={raw!r}: choose from {', '.join(map(str, action.choices))}")
        parser.set_defaults(**{action.dest: value})


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model to request (default: first from /v1/models)")
    parser.add_argument(
        "--endpoint",
        choices=ENDPOINTS,
        help="API to probe when the URL does not name one (default chat)",
    )
    parser.add_argument(
        "--tool-call",
        action="store_true",
        help="ask for a call of one fixed function, to probe and time the tool-call path "
        "(chat, responses, messages)",
    )
    parser.add_argument("--prompt", help="prompt text (default: a fixed counting prompt)")
    parser.add_argument(
        "--max-tokens", type=positive_int, default=64, help="output limit of each probe"
    )
    parser.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="do not send vLLM's ignore_eos (for servers that reject unknown fields)",
    )
    add_credential_arguments(parser)
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    parser.add_argument(
        "--accept-encoding",
        default=DEFAULT_ACCEPT_ENCODING,
        help=f"Accept-Encoding to send, as SDK clients do (default {DEFAULT_ACCEPT_ENCODING!r})",
    )
    parser.add_argument(
        "--connect-timeout", type=positive_seconds, default=5.0, help="seconds, DNS included"
    )
    parser.add_argument(
        "--headers-timeout", type=positive_seconds, default=30.0, help="seconds to the headers"
    )
    parser.add_argument(
        "--first-token-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds to the first token",
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=120.0, help="seconds for the whole probe"
    )
    parser.add_argument("--insecure", action="store_true", help="skip TLS certificate checks")


def _add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log messages of this level and above to stderr",
    )


def _command(
    commands: Any, name: str, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=description or help_text
    )
    _add_log_level(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamobs",
        description="Measure OpenAI-compatible token streams as users feel them.",
        epilog="Each command's long flags can also be set as STREAMOBS_<FLAG> (its --help "
        "names the variable; simulate's are STREAMOBS_SIM_<FLAG>); a flag on the command "
        "line wins.",
    )
    parser.add_argument("--version", action="version", version=f"streamobs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    probe = _command(commands, "probe", "run one-shot streaming probes against a URL")
    probe.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000 or .../v1/completions")
    _add_probe_arguments(probe)
    probe.add_argument("--count", type=positive_int, default=1, help="number of probes")
    probe.add_argument("--concurrency", type=positive_int, default=1, help="probes at once")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.add_argument(
        "--traces-receiver",
        metavar="ADDR",
        help="receive the server's own spans on ADDR for this run (host:port for OTLP/HTTP, "
        "grpc://host:port for gRPC; point vllm serve --otlp-traces-endpoint at it) and show "
        "each probe's queue, prefill, server TTFT and path time",
    )
    probe.add_argument(
        "--traces-wait",
        type=positive_seconds,
        default=15.0,
        help="seconds to wait for the spans after the probes (vLLM sends them every 5 s)",
    )
    _apply_env(probe)

    from streamobs.simulator import cli as simulator_cli

    simulate = _command(
        commands, "simulate", "serve a vLLM-shaped OpenAI-compatible streaming simulator"
    )
    simulator_cli.add_arguments(simulate)
    # Its own flags read STREAMOBS_SIM_* (and say so); the log level is everyone's.
    _apply_env(simulate, only=frozenset({"log_level"}))

    run = _command(commands, "run", "the daemon: scheduled probes, /metrics, status page")
    # The daemon says where it listens and what it watches, and each change of state.
    run.set_defaults(log_level="info")
    run.add_argument("--config", metavar="FILE", help="YAML configuration")
    run.add_argument(
        "--target", metavar="URL", help="probe this one URL (instead of a config file's targets)"
    )
    run.add_argument("--model", help="with --target: the model (default: from /v1/models)")
    run.add_argument(
        "--listen-address",
        metavar="HOST:PORT",
        help="overrides web.listen_address (default: the config's, else 127.0.0.1:9464)",
    )
    for collector in COLLECTORS:
        run.add_argument(
            f"--collector.{collector.name}",
            dest=f"collector_{collector.name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{collector.help}; overrides the config",
        )
    _apply_env(run)

    check = _command(commands, "check-config", "validate a configuration file")
    check.add_argument("file", help="YAML configuration")
    _apply_env(check)

    from streamobs.doctor import cli as doctor_cli

    doctor = _command(
        commands,
        "doctor",
        "diagnose a streaming path end to end: buffering, gzip, disconnects, timeouts",
    )
    doctor_cli.add_arguments(doctor)
    _apply_env(doctor)

    from streamobs import demo as demo_module

    demo = _command(commands, "demo", "simulator and daemon wired together, with a live view")
    demo_module.add_arguments(demo, positive_seconds)
    _apply_env(demo)

    from streamobs.pack import command as pack_command

    pack = _command(
        commands,
        "pack",
        "write the Prometheus rules, Alertmanager example and Grafana dashboards",
        "Write alerts/ (rules, Alertmanager example), dashboards/ and "
        "deploy/kubernetes/prometheusrule.yaml under --out, for the targets and SLOs of a "
        "streamobs config (--config) or for the default SLO on every target.",
    )
    pack_command.add_arguments(pack)
    _apply_env(pack)
    return parser


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    """``--header 'Name: value'`` flags as a mapping; the values are checked where every
    target's headers are (the config's target parser)."""
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
            # Never echo the value: headers often carry credentials.
            raise ValueError(f"bad --header {name.strip()[:40]!r}: expected 'Name: value'")
        headers[name.strip()] = content.strip()
    return headers


def _fail(code: int, message: str, command: str = "probe") -> int:
    print(f"streamobs {command}: error: {message}", file=sys.stderr)
    return code


# Where each setting of a probe comes from on the command line, for error messages.
_PROBE_FLAGS = {
    "url": "URL",
    "endpoint": "--endpoint",
    "model": "--model",
    "prompt": "--prompt",
    "max_tokens": "--max-tokens",
    "ignore_eos": "--no-ignore-eos",
    "tool_call": "--tool-call",
    "api_key_env": "--api-key-env",
    "api_key_file": "--api-key-file",
    "basic_auth": "--basic-auth-user",
    "basic_auth.username": "--basic-auth-user",
    "basic_auth.password_file": "--basic-auth-password-file",
    "basic_auth.password_env": "--basic-auth-password-env",
    "headers": "--header",
    "accept_encoding": "--accept-encoding",
    "timeouts.connect": "--connect-timeout",
    "timeouts.headers": "--headers-timeout",
    "timeouts.first_token": "--first-token-timeout",
    "timeouts.total": "--timeout",
}


def probe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as a target's settings, for the config's own target parser."""
    settings: dict[str, Any] = {
        "name": "probe",
        "url": args.url,
        "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos,
        "tool_call": args.tool_call,
        "headers": parse_headers(args.header),
        "accept_encoding": args.accept_encoding,
        "tls_insecure_skip_verify": args.insecure,
        "metrics_url": False,
        "timeouts": {
            "connect": args.connect_timeout,
            "headers": args.headers_timeout,
            "first_token": args.first_token_timeout,
            "total": args.timeout,
        },
    }
    optional = {
        "endpoint": args.endpoint,
        "model": args.model,
        "prompt": args.prompt,
        "api_key_env": args.api_key_env,
        "api_key_file": args.api_key_file,
    }
    settings.update({key: value for key, value in optional.items() if value})
    basic_auth = {
        "username": args.basic_auth_user,
        "password_file": args.basic_auth_password_file,
        "password_env": args.basic_auth_password_env,
    }
    if any(value is not None for value in basic_auth.values()):
        settings["basic_auth"] = {k: v for k, v in basic_auth.items() if v is not None}
    return settings


def _flag_message(error: ConfigError) -> str:
    """A config error about a probe setting, naming the flags it came from: the setting
    it starts with, and any other dotted setting it names (``timeouts.total``)."""
    message = str(error)
    for key in sorted(_PROBE_FLAGS, key=len, reverse=True):
        flag = _PROBE_FLAGS[key]
        if message.startswith(f"{key}."):
            message = flag + " " + message[len(key) + 1 :]  # --header NAME: ...
            break
        if message.startswith(f"{key}: "):
            message = flag + message[len(key) :]
            break
    # Settings named further on; plain words (url, model) are left alone, being prose too.
    # Longest first: basic_auth.password_file is one flag, not basic_auth's and a suffix.
    for key in sorted(_PROBE_FLAGS, key=len, reverse=True):
        if "." in key or "_" in key:
            message = re.sub(rf"(?<![\w.-]){re.escape(key)}\b", _PROBE_FLAGS[key], message)
    return message


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        config = probe_target(probe_settings(args))
    except ConfigError as exc:  # before ValueError, which it is
        return _fail(EXIT_USAGE, _flag_message(exc))
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    target = config.target
    problem = api_path_problem(target)
    if problem is not None:
        return _fail(EXIT_USAGE, problem)
    secrets = list(config.secrets())
    timeouts = config.timeouts
    models = [m.name for m in config.models]
    if models:
        model = models[0]
    else:
        try:
            model = discover_model(
                target,
                config.credential,
                timeouts.connect + timeouts.headers,
                config.verify_tls,
            )
        except ModelDiscoveryError as exc:
            return _fail(EXIT_FAILED, redact(str(exc), secrets, max_length=ERROR_CHARS))
    spec = config.probe_spec(model)
    traces: TracesService | None = None
    if args.traces_receiver:
        try:
            traces = TracesService(one_shot_settings(args.traces_receiver, args.traces_wait))
            traces.start()  # before the first probe, so no span is missed
        except ValueError as exc:
            return _fail(EXIT_USAGE, str(exc))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return _fail(EXIT_USAGE, f"cannot receive traces on {args.traces_receiver}: {reason}")

    def show(index: int, result: ProbeResult) -> None:
        if not args.json and args.count > 1:
            print(one_line(index + 1, result), flush=True)

    interrupted = False
    try:
        results = run_batch(spec, args.count, args.concurrency, on_result=show)
    except BatchInterrupted as stop:
        results, interrupted = stop.results, True
    results = [redact_result(r, secrets) for r in results]
    spans: ServerSpans | None = None
    if traces is not None:
        traced = [r.trace_id for r in results if r.trace_id is not None]
        try:
            spans = traces.wait_for_all(traced, args.traces_wait) if not interrupted else {}
        finally:
            traces.stop()
    if args.json:
        print(to_json(results, spans))
    elif args.count == 1 and results:
        print(describe(results[0]))
        if spans is not None:
            trace_id = results[0].trace_id
            span = spans.get(trace_id) if trace_id else None
            print(describe_server(results[0], span, args.traces_wait))
    elif results:
        print(describe_summary(results))
        if spans is not None:
            found = sum(1 for span in spans.values() if span is not None)
            print(f"  server spans  {found} of {len(results)} probes (--json has each)")
    if interrupted:
        print(f"streamobs probe: interrupted after {len(results)} probes", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_FAILED


def _daemon_config(args: argparse.Namespace) -> tuple[Config, Overrides]:
    if args.config and args.target:
        raise ConfigError("give either --config or --target, not both")
    chosen = {c.name: getattr(args, f"collector_{c.name}") for c in COLLECTORS}
    overrides = Overrides(
        listen_address=args.listen_address or None,
        collectors={name: on for name, on in chosen.items() if on is not None},
    )
    if args.config:
        config = load_config(args.config)
    elif args.target:
        config = single_target_config("default", args.target, args.model)
    else:
        raise ConfigError("a configuration is required: --config FILE or --target URL")
    return overrides.apply(config), overrides


def cmd_run(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics

    from streamobs.daemon import Daemon

    # `_created` samples become series of their own in the text format: noise for our
    # counters. Re-exposed vLLM families keep theirs, exactly as vLLM serves them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        config, overrides = _daemon_config(args)
        daemon = Daemon(config, config_path=args.config, overrides=overrides)
    except ConfigError as exc:
        return _fail(EXIT_USAGE, str(exc), "run")
    except OSError as exc:
        return _fail(
            EXIT_FAILED,
            f"cannot listen on {args.listen_address or config.listen_address}: {exc.strerror}",
            "run",
        )
    return daemon.run_until_signalled()


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        load_web_config(config.web_config_file)
    except ConfigError as exc:
        return _fail(EXIT_FAILED, str(exc), "check-config")
    print(f"{args.file}: OK, {len(config.targets)} target(s): {', '.join(target_names(config))}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamobs.simulator import cli as simulator_cli

    return simulator_cli.run(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from streamobs.doctor import cli as doctor_cli

    return doctor_cli.run(args)


def cmd_pack(args: argparse.Namespace) -> int:
    from streamobs.pack import command as pack_command

    return pack_command.run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from streamobs.demo import run_demo

    return run_demo(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handlers = {
        "probe": cmd_probe,
        "run": cmd_run,
        "check-config": cmd_check_config,
        "simulate": cmd_simulate,
        "doctor": cmd_doctor,
        "demo": cmd_demo,
        "pack": cmd_pack,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error worth a traceback.
        sys.stderr.close()
        return EXIT_FAILED
