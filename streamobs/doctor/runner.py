"""Runs the checks in order, each at most once, within the run's time bound."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from streamobs.doctor.checks import buffering, compression, disconnect, errors, headers, long_stream
from streamobs.doctor.context import Context
from streamobs.doctor.options import CHECKS, SHORT_BUDGET_TIMEOUTS, Budget, DoctorOptions
from streamobs.doctor.probes import Probes
from streamobs.doctor.verdict import CheckResult, Verdict, inconclusive, skipped
from streamobs.probe import ModelDiscoveryError, Target, discover_model
from streamobs.probe.models import list_models
from streamobs.secret import Credential, Secret, redact
from streamobs.traces.service import TracesService
from streamobs.traces.settings import one_shot_settings

SPAN_WAIT_SECONDS = 15.0  # how long a span is kept for a request that asks later

RUNNERS: dict[str, Callable[[Context], CheckResult]] = {
    buffering.NAME: buffering.run,
    compression.NAME: compression.run,
    headers.NAME: headers.run,
    errors.NAME: errors.run,
    disconnect.NAME: disconnect.run,
    long_stream.NAME: long_stream.run,
}
assert tuple(RUNNERS) == CHECKS


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    direct: str | None
    metrics_url: str
    model: str | None
    checks: tuple[CheckResult, ...]
    seconds: float
    error: str | None = None  # the run could not start (no model, no server)

    @property
    def exit_code(self) -> int:
        failed = any(check.verdict is Verdict.FAIL for check in self.checks)
        return 1 if failed or self.error else 0


def context_length(
    target: Target, model: str, credential: Credential | None, timeout: float
) -> int | None:
    """vLLM lists ``max_model_len`` per model in /v1/models; None when it is not there."""
    try:
        models = list_models(target, credential, timeout)
    except ModelDiscoveryError:
        return None
    for item in models:
        if item.get("id") == model:
            value = item.get("max_model_len")
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def run_doctor(
    options: DoctorOptions,
    on_model: Callable[[str, int | None], None] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Every check in order. ``on_model`` hears the model and its context length once
    known, ``on_result`` each result as soon as it is known (for live output)."""
    started = time.monotonic()
    target = options.target

    def report(checks: list[CheckResult], model: str | None, error: str | None = None) -> Report:
        return Report(
            url=target.request_url,
            direct=options.direct.request_url if options.direct else None,
            metrics_url=options.scrape_url,
            model=model,
            checks=tuple(checks),
            seconds=round(time.monotonic() - started, 3),
            error=error,
        )

    request_timeout = min(options.timeout, 10.0)
    model = options.model
    if not model:
        try:
            model = discover_model(target, options.credential, request_timeout)
        except ModelDiscoveryError as exc:
            return report([], None, redact(str(exc), options.secrets()))
    max_model_len = context_length(target, model, options.credential, request_timeout)
    if on_model is not None:
        on_model(model, max_model_len)
    traces: TracesService | None = None
    if options.traces_receiver:
        try:
            traces = TracesService(one_shot_settings(options.traces_receiver, SPAN_WAIT_SECONDS))
            traces.start()
        except (ValueError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return report(
                [], model, f"cannot receive traces on {options.traces_receiver}: {reason}"
            )
    budget = Budget(SHORT_BUDGET_TIMEOUTS * options.timeout)
    probes = Probes(options, model, budget)
    ctx = Context(options, model, max_model_len, probes, budget, traces)
    results: list[CheckResult] = []
    try:
        for name in CHECKS:
            # Checks quote what the server sent, which may echo the credential back.
            result = redact_check(_run_one(name, ctx), options.secrets())
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if traces is not None:
            traces.stop()
    return report(results, model)


def redact_check(check: CheckResult, secrets: tuple[Secret, ...]) -> CheckResult:
    """``check`` with every text in it (summary, details, evidence, fix) passed through
    ``secret.redact``: the credential and credential headers a server echoed are masked."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, secrets)
        if isinstance(value, Mapping):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(clean(item) for item in value)
        return value

    return replace(
        check,
        summary=clean(check.summary),
        details=clean(check.details),
        evidence=clean(check.evidence),
        fix=clean(check.fix),
    )


def _run_one(name: str, ctx: Context) -> CheckResult:
    if name in ctx.options.skip:
        return skipped(name, "skipped (--skip)")
    # long-stream has a bound of its own; the others share the budget.
    if name != long_stream.NAME and ctx.budget.exhausted:
        limit = SHORT_BUDGET_TIMEOUTS * ctx.options.timeout
        return inconclusive(name, f"not run: the checks used up their {limit:g} s")
    try:
        return RUNNERS[name](ctx)
    except Exception as exc:  # one check going wrong must not lose the others' verdicts
        message = f"the check could not run: {type(exc).__name__}: {exc}"
        return inconclusive(name, redact(message, ctx.options.secrets()))
