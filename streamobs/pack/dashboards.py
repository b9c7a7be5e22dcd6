"""The four Grafana dashboards, built from :class:`PackConfig`.

Every query filters on the ``job``, ``target`` and ``model`` variables (GPU panels on
``job``, ``instance`` and ``gpu``), and every rate uses ``$__rate_interval`` so it never
spans fewer than four scrapes. SLO panels read the recording rules from ``alerts.py``,
with the same objectives and windows as the alerts.
"""

from __future__ import annotations

from streamobs.pack import series as s
from streamobs.pack.alerts import (
    SLO,
    Scope,
    budget,
    either,
    error_ratio_record,
    grouped,
    per_target,
    slos,
)
from streamobs.pack.config import PackConfig
from streamobs.pack.grafana import Dashboard, Panel, Query, Row, Variable, render
from streamobs.pack.series import human_seconds, number, percent, selector

RATE = "$__rate_interval"
PROBE = selector('job=~"$job"', 'target=~"$target"', 'model=~"$model"')
TARGETS = selector('job=~"$job"', 'target=~"$target"')
# Engine series (one model server, whatever the number of targets reaching it). Engine
# kinds that name no model (llama.cpp, TGI: one model per server) have model="", shown
# whatever models are chosen.
ENGINE = selector('job=~"$job"', 'engine=~"$engine"', 'model=~"$model|"')
GPU = selector('job=~"$job"', 'instance=~"$instance"', 'gpu=~"$gpu"')
STREAMOBS = selector('job=~"$job"', 'instance=~"$instance"')

RED, ORANGE, GREEN = "red", "orange", "green"


def _variables(*extra: Variable) -> tuple[Variable, ...]:
    return (
        Variable("job", "Job", f"label_values({s.BUILD_INFO}, job)"),
        Variable("target", "Target", f'label_values({s.ATTEMPTS}{{job=~"$job"}}, target)'),
        Variable(
            "model",
            "Model",
            f'label_values({s.ATTEMPTS}{{job=~"$job", target=~"$target"}}, model)',
        ),
        *extra,
    )


# The engines behind the chosen targets, for dashboards with engine series.
ENGINE_VARIABLE = Variable(
    "engine",
    "Engine",
    f'label_values({s.TARGET_INFO}{{job=~"$job", target=~"$target"}}, engine)',
)


def _instance_variables() -> tuple[Variable, ...]:
    return (
        Variable("instance", "Instance", f'label_values({s.BUILD_INFO}{{job=~"$job"}}, instance)'),
        Variable(
            "gpu",
            "GPU",
            f'label_values({s.GPU_MEMORY_TOTAL}{{job=~"$job", instance=~"$instance"}}, gpu)',
        ),
    )


def _quantiles(
    config: PackConfig, histogram: str, matchers: str, who: str, by: str = "target"
) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({number(q)}, sum by (le, {by}) "
            f"(rate({histogram}_bucket{matchers}[{RATE}])))",
            f"{who} p{number(q * 100)} {{{{{by}}}}}",
        )
        for q in config.quantiles
    )


def _server(config: PackConfig, histogram: str, matchers: str, who: str) -> tuple[Query, ...]:
    """An engine histogram per engine: its quantiles and its exact mean."""
    return (
        *_quantiles(config, histogram, matchers, who, by="engine"),
        _mean(histogram, matchers, who),
    )


def _mean(histogram: str, matchers: str, who: str, by: str = "engine") -> Query:
    """The exact mean (rate of _sum over rate of _count), beside quantiles that a coarse
    bucket layout can only place within a bucket."""
    total = _rate(histogram + "_sum", matchers, by)
    count = _rate(histogram + "_count", matchers, by)
    return Query(f"{total}\n/\n{count}", f"{who} mean {{{{{by}}}}}")


def _rate(metric: str, matchers: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{matchers}[{RATE}]))"


def _observed_mean(histogram: str, matchers: str, by: str = "target") -> str:
    """The mean per observation, absent (not NaN) while the window has none: a NaN in a
    stacked panel would blank every series stacked above it."""
    total = _rate(histogram + "_sum", matchers, by)
    count = _rate(histogram + "_count", matchers, by)
    return f"{total}\n/\n({count} > 0)"


def _links(config: PackConfig) -> tuple[tuple[str, str], ...]:
    return (("Runbooks", config.runbook_url),)


def _dashboard(
    config: PackConfig,
    slug: str,
    title: str,
    description: str,
    rows: tuple[Row, ...],
    variables: tuple[Variable, ...] | None = None,
) -> Dashboard:
    return Dashboard(
        uid=config.dashboard_uid_prefix + slug,
        title=title,
        description=description,
        variables=variables or _variables(),
        rows=rows,
        tags=config.dashboard_tags,
        refresh=config.dashboard_refresh,
        time_from=config.dashboard_time_from,
        links=_links(config),
    )


def _threshold_values(config: PackConfig, slo: str) -> list[tuple[float, tuple[Scope, ...]]]:
    if slo == "ttft":
        return grouped(config.objectives, lambda o: o.ttft_seconds)
    return grouped(config.objectives, lambda o: o.tpot_seconds)


def _thresholds(config: PackConfig, slo: str) -> list[tuple[str, tuple[Scope, ...]]]:
    return [(human_seconds(v), t) for v, t in _threshold_values(config, slo)]


def _objectives(config: PackConfig) -> list[tuple[str, tuple[Scope, ...]]]:
    return [(percent(v), t) for v, t in grouped(config.objectives, lambda o: o.objective)]


def _threshold_steps(config: PackConfig, slo: str) -> tuple[tuple[float | None, str], ...]:
    """Green below the SLO threshold, red above it; orange between targets' thresholds."""
    edges = sorted(v for v, _ in _threshold_values(config, slo))
    return ((None, GREEN), *((v, ORANGE) for v in edges[:-1]), (edges[-1], RED))


# -- SLO overview ---------------------------------------------------------------------


def _per_objective(slo: SLO, before: str, after: str = "") -> str:
    """``<before>{matchers}<after> / <allowed error ratio>`` for each objective's targets."""
    parts = []
    for part in slo.objectives:
        matchers = selector(f'slo="{slo.name}"', 'job=~"$job"', 'target=~"$target"', part.matcher)
        parts.append(f"{before}{matchers}{after} / {budget(part.objective)}")
    return either(parts)


def slo_overview(config: PackConfig) -> Dashboard:
    rows: list[Row] = []
    period = config.slo_period
    shortest = config.slo_windows[0]
    # Models judged apart have series of their own (with a model label) beside their
    # target's (without); so do streamobs' SLO settings.
    who = "{{target}} {{model}}" if config.per_model else "{{target}}"
    per = "target, model" if config.per_model else "target"
    for slo in slos(config):
        recorded = {w: error_ratio_record(config, w) for w in config.slo_windows}
        matchers = selector(f'slo="{slo.name}"', 'job=~"$job"', 'target=~"$target"')
        avg = f"avg_over_time({recorded[shortest]}{matchers}[{period}])"
        factors = sorted({pair.factor for pair in config.burn_windows})
        objective_text = per_target([(percent(o.objective), (o.scope,)) for o in slo.objectives])
        budget_text = per_target([(percent(1 - o.objective), (o.scope,)) for o in slo.objectives])

        budget_left = _per_objective(slo, f"1 - avg_over_time({recorded[shortest]}", f"[{period}])")
        rows.append(
            Row(
                f"{slo.title} SLO: {objective_text}",
                (
                    Panel(
                        "stat",
                        f"{slo.title} SLI over {period}",
                        f"Share of good probes over the SLO period ({period}, or since the "
                        f"recording rules started if that is shorter). Bad: {slo.what}. "
                        f"Objective: {objective_text}.",
                        "percentunit",
                        (Query(f"1 - {avg}", who, instant=True),),
                        width=6,
                        steps=((None, RED), (slo.lowest_objective, GREEN)),
                    ),
                    Panel(
                        "stat",
                        f"{slo.title} error budget left ({period})",
                        f"Share of the {period} error budget ({budget_text} of "
                        "probes) not yet spent. Below zero the SLO is missed for the period.",
                        "percentunit",
                        (Query(budget_left, who, instant=True),),
                        width=6,
                        steps=((None, RED), (0.0, ORANGE), (0.25, GREEN)),
                    ),
                    Panel(
                        "timeseries",
                        f"{slo.title} burn rate",
                        "How many times faster than sustainable the error budget is spent, "
                        "per window (1 spends exactly the budget over the SLO period). The "
                        "alerts fire when a long and its short window both exceed a factor: "
                        + ", ".join(
                            f"{p.long}/{p.short} x{number(p.factor)} ({p.severity})"
                            for p in config.burn_windows
                        )
                        + ".",
                        "suffix:×",
                        tuple(
                            Query(
                                _per_objective(slo, recorded[w]),
                                f"{who} {w}",
                            )
                            for w in config.slo_windows
                        ),
                        width=12,
                        min=0,
                        steps=(
                            (None, GREEN),
                            *((f, ORANGE) for f in factors[:-1]),
                            (factors[-1], RED),
                        ),
                        threshold_lines=True,
                    ),
                ),
            )
        )
    rows.append(
        Row(
            "Probes behind the SLIs",
            (
                Panel(
                    "timeseries",
                    "Probes per second",
                    "Probes run per target and model: every SLI above is a share of these, so "
                    "a few probes a minute make each one a coarse but steady sample.",
                    "reqps",
                    (Query(_rate(s.ATTEMPTS, PROBE, "target, model"), "{{target}} {{model}}"),),
                    width=24,
                ),
            ),
        )
    )
    configured = "target and model with its own" if config.per_model else "target"
    rows.append(
        Row(
            "Configured in streamobs",
            (
                Panel(
                    "stat",
                    "TTFT threshold",
                    f"The TTFT threshold streamobs is configured with per {configured} (its "
                    "status page uses it); these rules were generated for "
                    f"{per_target(_thresholds(config, 'ttft'))}.",
                    "s",
                    (Query(f"max by ({per}) ({s.SLO_TTFT_THRESHOLD}{TARGETS})", who, True),),
                    width=8,
                ),
                Panel(
                    "stat",
                    "TPOT threshold",
                    f"The TPOT threshold streamobs is configured with per {configured}; these "
                    f"rules were generated for {per_target(_thresholds(config, 'tpot'))}.",
                    "s",
                    (Query(f"max by ({per}) ({s.SLO_TPOT_THRESHOLD}{TARGETS})", who, True),),
                    width=8,
                ),
                Panel(
                    "stat",
                    "Objective",
                    f"The objective streamobs is configured with per {configured}; these rules "
                    f"were generated for {per_target(_objectives(config))}.",
                    "percentunit",
                    (Query(f"max by ({per}) ({s.SLO_OBJECTIVE}{TARGETS})", who, True),),
                    width=8,
                ),
            ),
        )
    )
    return _dashboard(
        config,
        "slo",
        "streamobs / SLO overview",
        "TTFT, TPOT and availability SLOs of streaming probes: SLI, error budget and burn "
        "rates, from the streamobs recording rules.",
        tuple(rows),
    )


# -- Streaming probes -----------------------------------------------------------------


def streaming_probes(config: PackConfig) -> Dashboard:
    vllm = ENGINE  # server side: the engines behind the chosen targets
    ttft_line = _threshold_steps(config, "ttft")
    tpot_line = _threshold_steps(config, "tpot")
    latency = Row(
        "Latency: client (probe) vs server (vLLM)",
        (
            Panel(
                "timeseries",
                "TTFT",
                "Time to first token: the probe's (client side, network and proxies "
                "included) and vLLM's own. Probes are a sample of a few per minute; vLLM's "
                "covers all requests. Dashed: the SLO threshold.",
                "s",
                (
                    *_quantiles(config, s.TTFT, PROBE, "client"),
                    *_server(config, s.VLLM_TTFT, vllm, "server"),
                ),
                steps=ttft_line,
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "TTFT outside the engine (approximation)",
                "Mean client TTFT minus vLLM's mean TTFT over a scrape window, other users' "
                "requests included: roughly the time in the network, TLS, proxies and the API "
                "server. The path time (with traces_receiver, in the panels on where the "
                "time to first token goes) is exact per probe.",
                "s",
                (Query(f"{s.TTFT_OVERHEAD}{PROBE}", "{{target}}"),),
            ),
            Panel(
                "timeseries",
                "TPOT (client) and mean inter-token latency (server)",
                "Time per output token after the first, per probe, against vLLM's mean "
                "inter-token latency (V0 time_per_output_token_seconds, V1 "
                "inter_token_latency_seconds). Dashed: the SLO threshold.",
                "s",
                (
                    *_quantiles(config, s.TPOT, PROBE, "client TPOT"),
                    _mean(s.VLLM_ITL, vllm, "server ITL"),
                ),
                steps=tpot_line,
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "Inter-token latency",
                "Gaps between consecutive content events as the probe received them, and "
                "as vLLM produced them. A client p99 far above the server's means tokens "
                "are held back on the way (buffering, batching proxies).",
                "s",
                (
                    *_quantiles(config, s.ITL, PROBE, "client"),
                    *_server(config, s.VLLM_ITL, vllm, "server"),
                ),
            ),
            Panel(
                "timeseries",
                "End to end",
                "Request start to end of stream, successful probes and all vLLM requests.",
                "s",
                (
                    *_quantiles(config, s.E2E, PROBE, "client"),
                    *_server(config, s.VLLM_E2E, vllm, "server"),
                ),
            ),
            Panel(
                "timeseries",
                "Time to response headers",
                "Request start to the HTTP status line (time to first byte), every probe "
                "that got one. High here but not in vLLM's queue time: connection, TLS or "
                "a proxy.",
                "s",
                _quantiles(config, s.HEADERS, PROBE, "client"),
            ),
        ),
    )
    server_rest = (
        f"{_observed_mean(s.SERVER_TTFT, PROBE)}\n- on (target)\n"
        f"{_observed_mean(s.SERVER_QUEUE, PROBE)}\n- on (target)\n"
        f"{_observed_mean(s.SERVER_PREFILL, PROBE)}"
    )
    ttft_parts = Row(
        "Where the time to first token goes",
        (
            Panel(
                "timeseries",
                "Where the time to first token goes: $target",
                "Each probe's time to first token taken apart, per target, as means over the "
                "window (rate of _sum over rate of _count of the per-probe histograms). "
                "dns, connect (TCP), tls: setting up the probe's connection, before the "
                "request is sent (not part of TTFT; no tls on plain HTTP). path: client TTFT "
                "minus the server's own TTFT of the same request, i.e. the network, proxies "
                "and gateways in between. queue: waiting in the server's queue. prefill: "
                "computing the prompt up to the first token. server, other: the rest of the "
                "server's TTFT (handling the request before the queue and the first token "
                "after prefill). path, queue, prefill and server, other add up to the mean "
                "client TTFT of those probes. They come from vLLM's own llm_request span of "
                "each probe, so they need streamobs' trace receiver (traces_receiver) and "
                "vLLM started with --otlp-traces-endpoint pointing at it; without it only "
                "the connection phases show. Successful probes with exact stamps only.",
                "s",
                (
                    Query(_observed_mean(s.CONNECTION, PROBE, "target, phase"), "{{phase}}"),
                    Query(_observed_mean(s.PATH, PROBE), "path"),
                    Query(_observed_mean(s.SERVER_QUEUE, PROBE), "queue"),
                    Query(_observed_mean(s.SERVER_PREFILL, PROBE), "prefill"),
                    Query(server_rest, "server, other"),
                ),
                width=24,
                min=0,
                stack=True,
                repeat="target",
            ),
        ),
    )
    distributions = Row(
        "Distributions",
        (
            Panel(
                "heatmap",
                "TTFT distribution (probes)",
                "Probes per TTFT bucket over time: a second band means a second population "
                "(e.g. some replicas slow, or queueing).",
                "s",
                (Query(f"sum by (le) (rate({s.TTFT}_bucket{PROBE}[{RATE}]))", "{{le}}"),),
            ),
            Panel(
                "heatmap",
                "Inter-token latency distribution (probes)",
                "Token gaps per bucket over time, as received by the probes.",
                "s",
                (Query(f"sum by (le) (rate({s.ITL}_bucket{PROBE}[{RATE}]))", "{{le}}"),),
            ),
        ),
    )
    attempts = _rate(s.ATTEMPTS, PROBE, "target")
    outcomes = Row(
        "Outcomes",
        (
            Panel(
                "timeseries",
                "Probe outcomes",
                "Probes per second by outcome class: ok, or the failure class (connect, "
                "tls, http_status, not_sse, timeout_*, stream_error, truncated, malformed, "
                "empty, too_large). See the runbooks for what each means.",
                "reqps",
                (
                    Query(
                        f"sum by (outcome) (rate({s.FAILURES}{PROBE}[{RATE}])) > 0",
                        "{{outcome}}",
                    ),
                    Query(
                        f"sum(rate({s.ATTEMPTS}{PROBE}[{RATE}]))\n-\n"
                        f"sum(rate({s.FAILURES}{PROBE}[{RATE}]))",
                        "ok",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "timeseries",
                "Failed probes",
                "Share of probes that failed, per target.",
                "percentunit",
                (Query(f"{_rate(s.FAILURES, PROBE, 'target')}\n/\n{attempts}", "{{target}}"),),
                min=0,
            ),
            Panel(
                "stat",
                "Last probe",
                "Whether the last probe of each target succeeded.",
                "bool_yes_no",
                (Query(f"max by (target) ({s.SUCCESS}{PROBE})", "{{target}}", True),),
                width=12,
                steps=((None, RED), (1.0, GREEN)),
            ),
            Panel(
                "stat",
                "Since the last probe",
                "Time since each target's last probe started; more than a few intervals "
                "means probing has stopped.",
                "s",
                (Query(f"time() - max by (target) ({s.LAST_RUN}{PROBE})", "{{target}}", True),),
                width=12,
            ),
        ),
    )
    delivery = Row(
        "Stream delivery",
        (
            Panel(
                "timeseries",
                "Buffered streams",
                "Share of probes whose tokens arrived in bursts although the server sent "
                "them spread out: a proxy buffering the response, or gzip on "
                "text/event-stream.",
                "percentunit",
                (
                    Query(
                        f"{_rate(s.BUFFERED, PROBE, 'target')}\n/\n{attempts}",
                        "{{target}}",
                    ),
                ),
                min=0,
                max=1,
                steps=((None, GREEN), (config.stream_buffered.threshold, RED)),
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "Probes with degraded timing",
                "Share of probes whose own stamps streamobs could not vouch for (it read too "
                "late: short of CPU), by reason. They count for availability but not for "
                "latency; a high share means the sidecar needs a CPU request.",
                "percentunit",
                (
                    Query(
                        f"{_rate(s.DEGRADED, PROBE, 'target, reason')}"
                        f"\n/ on (target) group_left\n{attempts}",
                        "{{target}} {{reason}}",
                    ),
                ),
                min=0,
                max=1,
                steps=((None, GREEN), (config.probe_timing_degraded.threshold, RED)),
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "Burst share of the last probe",
                "Share of the last probe's tokens that arrived together with others in one "
                "read. Near 0 on a healthy path; near 1 when the whole answer arrives at once.",
                "percentunit",
                (Query(f"{s.BURST_SHARE}{PROBE}", "{{target}}"),),
                min=0,
                max=1,
            ),
            Panel(
                "timeseries",
                "Probe output tokens",
                "Output tokens per second received by successful probes.",
                "suffix: tokens/s",
                (Query(_rate(s.OUTPUT_TOKENS, PROBE, "target"), "{{target}}"),),
            ),
        ),
    )
    return _dashboard(
        config,
        "probes",
        "streamobs / Streaming probes",
        "What streaming clients feel: TTFT, TPOT, inter-token latency and end-to-end "
        "latency from streamobs' probes next to vLLM's own view, outcome classes and "
        "buffered streams.",
        (latency, ttft_parts, distributions, outcomes, delivery),
        variables=_variables(ENGINE_VARIABLE),
    )


# -- engines --------------------------------------------------------------------------


def engine_dashboard(config: PackConfig) -> Dashboard:
    v = ENGINE
    by = "engine, model"
    load = Row(
        "Load",
        (
            Panel(
                "timeseries",
                "Requests running and waiting",
                "Requests in the engine's running batch and in its queue (vLLM "
                "num_requests_running/waiting, SGLang num_running_reqs/num_queue_reqs, ...: "
                "the README's metric reference says which per kind). Dashed: the queue "
                "length StreamobsEngineQueueGrowing watches.",
                "short",
                (
                    Query(f"sum by ({by}) ({s.VLLM_RUNNING}{v})", "running {{engine}}"),
                    Query(f"sum by ({by}) ({s.VLLM_WAITING}{v})", "waiting {{engine}}"),
                ),
                steps=((None, GREEN), (config.engine_queue_growing.threshold, RED)),
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "KV cache usage",
                "Share of the KV cache in use, 0 to 1 (vLLM V0 gpu_cache_usage_perc, V1 "
                "kv_cache_usage_perc; SGLang full_token_usage; ...). Near full, new requests "
                "wait and running ones are preempted.",
                "percentunit",
                (
                    Query(
                        f"max by ({by}, engine_index) ({s.VLLM_KV_CACHE}{v})",
                        "{{engine}} core {{engine_index}}",
                    ),
                ),
                min=0,
                max=1,
                steps=((None, GREEN), (config.engine_kv_cache_near_full.threshold, RED)),
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "Preemptions",
                "Requests preempted (SGLang: retracted) per second: the KV cache could not "
                "hold the batch; preempted requests are recomputed.",
                "reqps",
                (Query(_rate(s.VLLM_PREEMPTIONS, v, by), "{{engine}}"),),
            ),
            Panel(
                "timeseries",
                "Finished requests",
                "Requests the engine finished per second, by finished_reason (stop, length, "
                "abort, ...).",
                "reqps",
                (
                    Query(
                        _rate(s.VLLM_REQUEST_SUCCESS, v, "finished_reason"), "{{finished_reason}}"
                    ),
                ),
                stack=True,
            ),
        ),
    )
    throughput = Row(
        "Throughput and cache",
        (
            Panel(
                "timeseries",
                "Tokens per second",
                "Prompt (prefill) and generation (output) tokens per second.",
                "suffix: tokens/s",
                (
                    Query(_rate(s.VLLM_PROMPT_TOKENS, v, by), "prompt {{engine}}"),
                    Query(_rate(s.VLLM_GENERATION_TOKENS, v, by), "generation {{engine}}"),
                ),
            ),
            Panel(
                "timeseries",
                "Prefix cache hit ratio",
                "Share of prompt tokens served from the prefix cache (V1 "
                "vllm:prefix_cache_hits/queries; older V1 releases gpu_prefix_cache_*). V0 "
                "only exposes a hit-rate gauge, so this panel is empty there.",
                "percentunit",
                (
                    Query(
                        f"{_rate(s.VLLM_PREFIX_HITS, v, by)}\n/\n"
                        f"{_rate(s.VLLM_PREFIX_QUERIES, v, by)}",
                        "{{engine}}",
                    ),
                ),
                min=0,
                max=1,
            ),
        ),
    )
    latency = Row(
        "Engine latency",
        (
            Panel(
                "timeseries",
                "Queue time",
                "Time requests waited in the engine's queue before being scheduled (LiteLLM: "
                "the proxy's own queue). vLLM's buckets start at 0.3 s: a quantile only "
                "names the bucket, the mean (rate of _sum over rate of _count) is exact.",
                "s",
                _server(config, s.VLLM_QUEUE_TIME, v, "queue"),
            ),
            Panel(
                "timeseries",
                "Time to first token (server)",
                "The engine's own TTFT: queueing plus prefill, without the network (LiteLLM: "
                "its backend call's). Quantiles within the engine's buckets, and the exact "
                "mean.",
                "s",
                _server(config, s.VLLM_TTFT, v, "server"),
            ),
            Panel(
                "timeseries",
                "Inter-token latency (server)",
                "The engine's own gaps between tokens: per engine step on vLLM (V0 "
                "time_per_output_token_seconds, V1 inter_token_latency_seconds), per token on "
                "SGLang. vLLM's first bucket ends at 10 ms: the mean is exact where the "
                "quantiles are not.",
                "s",
                _server(config, s.VLLM_ITL, v, "server"),
            ),
            Panel(
                "timeseries",
                "End to end (server)",
                "The engine's own request latency, arrival to last token.",
                "s",
                _server(config, s.VLLM_E2E, v, "server"),
            ),
        ),
    )
    # An engine collector's health names the engine it scraped in its target label.
    collector = selector(s.ENGINE_COLLECTORS, 'job=~"$job"', 'target=~"$engine"')
    scrape = Row(
        "Collector",
        (
            Panel(
                "timeseries",
                "Engine /metrics scrape",
                "Whether streamobs' last scrape of each engine's /metrics worked (1) or not "
                "(0); collector is the engine's kind (engine while it is not known).",
                "bool",
                (Query(f"{s.COLLECTOR_UP}{collector}", "{{target}}"),),
                min=0,
                max=1,
            ),
            Panel(
                "timeseries",
                "Engine /metrics scrape duration",
                "How long streamobs' last scrape of each engine's /metrics took.",
                "s",
                (Query(f"{s.COLLECTOR_DURATION}{collector}", "{{target}}"),),
            ),
        ),
    )
    return _dashboard(
        config,
        "engines",
        "streamobs / Engines",
        "The engines' own metrics as streamobs normalises them (streamobs_engine_*): one "
        "dashboard for vLLM (V0, V1 and its renames), SGLang, TensorRT-LLM, llama.cpp, TGI "
        "and LiteLLM; a panel says on which kinds it has no data.",
        (load, throughput, latency, scrape),
        variables=_variables(ENGINE_VARIABLE),
    )


# -- GPU and efficiency ---------------------------------------------------------------


def gpu_efficiency(config: PackConfig) -> Dashboard:
    device = "{{instance}} GPU {{gpu}}"
    reasons = "|".join(config.gpu_throttle_reasons)
    throttle = selector(
        'job=~"$job"', 'instance=~"$instance"', 'gpu=~"$gpu"', f'reason=~"{reasons}"'
    )
    uncorrected = selector('job=~"$job"', 'instance=~"$instance"', 'gpu=~"$gpu"')
    gpu_rows = Row(
        "GPU",
        (
            Panel(
                "timeseries",
                "Utilisation",
                "Share of time a kernel ran (GPU) and device memory was read or written "
                "(memory bandwidth, not capacity).",
                "percentunit",
                (
                    Query(f"{s.GPU_UTILIZATION}{GPU}", f"{device} compute"),
                    Query(f"{s.GPU_MEMORY_UTILIZATION}{GPU}", f"{device} memory"),
                ),
                min=0,
                max=1,
            ),
            Panel(
                "timeseries",
                "Memory",
                "Device memory used and in total. vLLM preallocates its KV cache, so "
                "'used' sits near gpu_memory_utilization of the total by design.",
                "bytes",
                (
                    Query(f"{s.GPU_MEMORY_USED}{GPU}", f"{device} used"),
                    Query(f"{s.GPU_MEMORY_TOTAL}{GPU}", f"{device} total"),
                ),
                min=0,
            ),
            Panel(
                "timeseries",
                "Power",
                "Board power draw against the limit the driver enforces.",
                "watt",
                (
                    Query(f"{s.GPU_POWER}{GPU}", f"{device} draw"),
                    Query(f"{s.GPU_POWER_LIMIT}{GPU}", f"{device} limit"),
                ),
                min=0,
            ),
            Panel(
                "timeseries",
                "Temperature",
                "GPU die temperature. Dashed: the StreamobsGpuHot threshold.",
                "celsius",
                (Query(f"{s.GPU_TEMPERATURE}{GPU}", device),),
                steps=((None, GREEN), (config.gpu_hot.threshold, RED)),
                threshold_lines=True,
            ),
            Panel(
                "timeseries",
                "Clocks",
                "SM and memory clocks; a drop under load with a clock event below is throttling.",
                "hertz",
                (
                    Query(f"{s.GPU_SM_CLOCK}{GPU}", f"{device} SM"),
                    Query(f"{s.GPU_MEMORY_CLOCK}{GPU}", f"{device} memory"),
                ),
            ),
            Panel(
                "timeseries",
                "Throttling",
                "Clock-event (throttle) reasons that slow the GPU against the workload's "
                f"will ({', '.join(config.gpu_throttle_reasons)}): 1 while active.",
                "bool",
                (Query(f"{s.GPU_CLOCK_EVENT}{throttle}", f"{device} {{{{reason}}}}"),),
                min=0,
                max=1,
            ),
            Panel(
                "timeseries",
                "PCIe throughput",
                "Bytes per second over PCIe, as NVML samples it (20 ms windows).",
                "Bps",
                (
                    Query(f"{s.GPU_PCIE_TX}{GPU}", f"{device} tx"),
                    Query(f"{s.GPU_PCIE_RX}{GPU}", f"{device} rx"),
                ),
            ),
            Panel(
                "timeseries",
                "ECC errors",
                "ECC memory errors per second by type; any uncorrected error is worth a "
                "look (StreamobsGpuEccErrors).",
                "short",
                (
                    Query(
                        f"sum by (instance, gpu, error_type) "
                        f"(rate({s.GPU_ECC_ERRORS}{uncorrected}[{RATE}]))",
                        "{{instance}} GPU {{gpu}} {{error_type}}",
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Memory per process",
                "Device memory per process; served_model=1 marks the model server.",
                "bytes",
                (
                    Query(
                        f"{s.GPU_PROCESS_MEMORY}{GPU}",
                        "{{instance}} GPU {{gpu}} pid {{pid}} (served model: {{served_model}})",
                    ),
                ),
            ),
        ),
    )
    tokens = ENGINE
    efficiency = Row(
        "Efficiency and cost",
        (
            Panel(
                "timeseries",
                "Output tokens per second",
                "Generation tokens per second from vLLM's counter, per engine.",
                "suffix: tokens/s",
                (Query(_rate(s.VLLM_GENERATION_TOKENS, tokens, "engine, model"), "{{engine}}"),),
                width=8,
            ),
            Panel(
                "timeseries",
                "Energy per output token",
                "GPU energy per output token over streamobs' efficiency window: the energy "
                "counter's growth over the generation-token counter's. Absent while no "
                "token is generated.",
                "joule",
                (Query(f"{s.EFFICIENCY_JOULES_PER_TOKEN}{STREAMOBS}", "{{instance}}"),),
                width=8,
            ),
            Panel(
                "timeseries",
                "Cost per million output tokens",
                "The configured GPU price per hour times the GPUs, over the output tokens "
                "of the window, per million; in the currency of the configured price. "
                "Idle time costs too, so it falls as load rises.",
                "short",
                (Query(f"{s.EFFICIENCY_COST_PER_MILLION}{STREAMOBS}", "{{instance}}"),),
                width=8,
            ),
        ),
    )
    own = Row(
        "streamobs",
        (
            Panel(
                "timeseries",
                "Collectors",
                "Whether each streamobs collector's last run worked (1) or not (0). The GPU "
                "collector is down where NVML is missing.",
                "bool",
                (
                    Query(
                        f"{s.COLLECTOR_UP}{STREAMOBS}",
                        "{{instance}} {{collector}} {{target}}",
                    ),
                ),
                min=0,
                max=1,
                width=8,
            ),
            Panel(
                "timeseries",
                "OTLP export failures",
                "OTLP exports that failed per second, by signal (after the exporter's own "
                "retries).",
                "short",
                (
                    Query(
                        f"sum by (instance, signal) "
                        f"(rate({s.OTLP_EXPORT_FAILURES}{STREAMOBS}[{RATE}]))",
                        "{{instance}} {{signal}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "timeseries",
                "streamobs CPU",
                "CPU cores streamobs itself uses.",
                "short",
                (Query(f"rate({s.PROCESS_CPU}{STREAMOBS}[{RATE}])", "{{instance}}"),),
                width=4,
            ),
            Panel(
                "timeseries",
                "streamobs memory",
                "streamobs' resident memory.",
                "bytes",
                (Query(f"{s.PROCESS_RSS}{STREAMOBS}", "{{instance}}"),),
                width=4,
            ),
        ),
    )
    return _dashboard(
        config,
        "gpu",
        "streamobs / GPU and efficiency",
        "Per-GPU health from NVML (utilisation, memory, power, temperature, clocks, "
        "throttling, ECC), energy and cost per output token, and streamobs' own health.",
        (gpu_rows, efficiency, own),
        variables=_variables(ENGINE_VARIABLE, *_instance_variables()),
    )


def dashboards(config: PackConfig) -> dict[str, Dashboard]:
    """File name (under ``dashboards/``) to dashboard."""
    return {
        "streamobs-slo.json": slo_overview(config),
        "streamobs-probes.json": streaming_probes(config),
        "streamobs-engines.json": engine_dashboard(config),
        "streamobs-gpu.json": gpu_efficiency(config),
    }


def rendered(config: PackConfig) -> dict[str, str]:
    return {name: render(spec) for name, spec in dashboards(config).items()}
