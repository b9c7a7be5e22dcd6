"""Render ``metrics.txt`` with SGLang 0.5.23's own metrics code.

Not part of the test suite (it needs the SGLang wheel). To run it, in a throwaway venv:

    pip download sglang==0.5.23 --no-deps -d pkgs
    unzip -q pkgs/sglang-0.5.23-*.whl 'sglang/*' -d sglang-0.5.23
    python -m venv venv
    venv/bin/pip install prometheus_client==0.26.0 msgspec psutil fastapi httpx
    venv/bin/python tests/data/sglang/render.py sglang-0.5.23 > tests/data/sglang/metrics.txt

What runs is SGLang's own code, loaded from the unpacked wheel:
``sglang/srt/observability/metrics_collector.py`` (``TokenizerMetricsCollector``,
``SchedulerMetricsCollector``, ``RadixCacheMetricsCollector``),
``http_request_metrics.py`` (the HTTP middleware), ``cpu_monitor.py``, ``func_timer.py``,
``utils.py`` (bucket helpers), ``scheduler_stage_metrics.py`` (stage names) and
``sglang/srt/utils/gauge_histogram.py``. Their heavy imports (torch, the server
arguments, the runtime context) are inert stand-ins answering SGLang's defaults;
``DisaggregationMode`` is taken from ``sglang/srt/disaggregation/utils.py`` by source.

SGLang serves ``/metrics`` in prometheus_client's multiprocess mode (``add_prometheus_middleware``
in ``sglang/srt/utils/common.py``: a ``MultiProcessCollector`` over
``PROMETHEUS_MULTIPROC_DIR``), each process writing its own files. So here too: the
scheduler (``SchedulerMetricsCollector`` and the radix cache's collector) and the
detokenizer (its CPU monitor) run in processes of their own, the tokenizer manager's
collectors and the HTTP middleware in the serving process, and the scrape is one in-process
GET of the same ``/metrics`` mount, taken while two chat requests are still in flight.

The traffic replayed is one served model ``tiny`` (``--enable-metrics``, TP 1, defaults
otherwise): six streaming chat requests, four finished (three by length after 16 tokens,
one by stop after 7), one decoding and one waiting, at 20 ms per decode step and one new
token per streamed output (``stream_interval`` 1).
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Any

_REAL = {
    "sglang.srt.observability.metrics_collector",
    "sglang.srt.observability.utils",
    "sglang.srt.observability.scheduler_stage_metrics",
    "sglang.srt.observability.http_request_metrics",
    "sglang.srt.observability.cpu_monitor",
    "sglang.srt.observability.func_timer",
    "sglang.srt.utils.gauge_histogram",
    "sglang.srt.utils.http_middleware_patch",
    "sglang.srt.model_executor.graph_memory_usage",
}
_PACKAGES = {name.rsplit(".", i)[0] for name in _REAL for i in range(1, name.count(".") + 1)}
MODEL = "tiny"


class _Inert(types.ModuleType):
    """A module whose every attribute is a fresh, empty class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {})
        setattr(self, name, value)
        return value


def _ns(**kwargs: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kwargs)


# SGLang's defaults for what the collectors read from the runtime context.
_OBSERVABILITY = _ns(
    enable_metrics=True,
    enable_metrics_for_all_schedulers=False,
    kv_events_config=None,
    extra_metric_labels=None,
    tokenizer_metrics_allowed_custom_labels=None,
    prompt_tokens_buckets=None,
    generation_tokens_buckets=None,
    bucket_time_to_first_token=None,
    bucket_inter_token_latency=None,
    bucket_e2e_request_latency=None,
    stat_loggers=None,
)
_SCHEDULE = _ns(
    enable_priority_scheduling=False,
    prefill_delayer_max_delay_passes=30,
    prefill_delayer_forward_passes_buckets=None,
    prefill_delayer_wait_seconds_buckets=None,
)
_PARALLEL = _ns(
    tp_rank=0,
    pp_rank=0,
    moe_ep_rank=0,
    dp_rank=None,
    attn_tp_rank=0,
    attn_cp_rank=0,
    attn_dp_rank=0,
)


def _runtime_context() -> types.ModuleType:
    module = _Inert("sglang.srt.runtime_context")
    module.__dict__.update(
        get_observability=lambda: _OBSERVABILITY,
        get_schedule=lambda: _SCHEDULE,
        get_parallel=lambda: _PARALLEL,
        get_serving=lambda: _ns(served_model_name=MODEL, enable_streaming_session=False),
        get_disagg=lambda: _ns(disaggregation_mode="null", enable_pd_role_switch=False),
        get_context=lambda: _ns(is_config_namespace_published=lambda name: False),
        exports_expert_balancedness_to_prometheus=lambda: False,
    )
    return module


def _disaggregation_utils(root: Path) -> types.ModuleType:
    source = (root / "sglang/srt/disaggregation/utils.py").read_text()
    nodes = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "DisaggregationMode"
    ]
    module = _Inert("sglang.srt.disaggregation.utils")
    module.__dict__["Enum"] = __import__("enum").Enum
    code = compile(ast.Module(body=nodes, type_ignores=[]), "disaggregation/utils", "exec")
    exec(code, module.__dict__)
    return module


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] not in ("sglang", "torch"):
            return None
        if fullname in _REAL:
            location = self.root / (fullname.replace(".", "/") + ".py")
            return importlib.util.spec_from_file_location(fullname, location)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        name = spec.name
        if name == "sglang.srt.runtime_context":
            return _runtime_context()
        if name == "sglang.srt.disaggregation.utils":
            return _disaggregation_utils(self.root)
        module = _Inert(name)
        module.__path__ = [str(self.root / name.replace(".", "/"))] if name in _PACKAGES else []
        if name == "sglang.srt.utils":

            def get_bool_env_var(var: str, default: str = "false") -> bool:
                return os.getenv(var, default).lower() in ("true", "1")

            module.__dict__["get_bool_env_var"] = get_bool_env_var
        if name == "sglang.srt.utils.nvtx_utils":
            module.__dict__.update(
                NVTX_SCHEDULER_ENABLED=False,
                profile_range=lambda *a, **k: nullcontext(),
                scheduler_nvtx_method=lambda name: lambda func: func,
            )
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


STEP_S = 0.02  # one decode step
MAX_TOTAL_TOKENS = 2048
# (request id, arrival, prompt tokens, cached prompt tokens, tokens generated, finish)
REQUESTS = [
    ("r0", 0.000, 24, 0, 16, "length"),
    ("r1", 0.010, 31, 16, 16, "length"),
    ("r2", 0.030, 18, 0, 7, "stop"),
    ("r3", 0.050, 40, 16, 16, "length"),
    ("r4", 0.400, 27, 0, 5, None),  # decoding at the scrape
    ("r5", 0.650, 22, 0, 0, None),  # waiting at the scrape
]
# Seconds from arrival: into the waiting queue, then to the first forward (prefill start).
PROCESS_S = 0.0008
QUEUE_S = {"r0": 0.12, "r1": 0.11, "r2": 0.09, "r3": 0.09, "r4": 0.02}
PREFILL_S = 0.018


def _scheduler() -> None:
    from sglang.srt.model_executor.graph_memory_usage import GRAPH_MEMORY_USAGE_KEYS
    from sglang.srt.observability.metrics_collector import (
        QueueCount,
        RadixCacheMetricsCollector,
        SchedulerMetricsCollector,
        SchedulerStats,
        radix_cache_metric_labels,
    )

    labels = {
        "model_name": MODEL,
        "engine_type": "unified",
        "tp_rank": 0,
        "pp_rank": 0,
        "moe_ep_rank": 0,
    }
    collector = SchedulerMetricsCollector(labels=labels, server_args=None)  # type: ignore[arg-type]
    RadixCacheMetricsCollector(labels=radix_cache_metric_labels("RadixCache", _PARALLEL, False))
    graph_memory = dict.fromkeys(GRAPH_MEMORY_USAGE_KEYS, 0.0)
    graph_memory.update(prefill=0.0, decode=0.41)
    collector.emit_constants(
        max_total_num_tokens=MAX_TOTAL_TOKENS,
        max_total_num_tokens_swa=None,
        weight_memory_usage_gb=0.03,
        kv_cache_memory_usage_gb=0.03,
        graph_memory_usage_gb=graph_memory,
        max_running_requests_under_SLO=None,
        page_size=1,
        num_pages=MAX_TOTAL_TOKENS,
        context_len=1024,
        startup_available_gpu_memory_gb=70.5,
    )
    # Prefill batches, each with the state logged after it: (requests, running, waiting,
    # KV tokens held by running requests, evictable (radix-cached) tokens, gen. tokens/s).
    batches = [
        (["r0", "r1", "r2"], 3, 1, 76, 0, 0.0),
        (["r3"], 4, 0, 141, 0, 148.0),
        (["r4"], 1, 1, 28, 180, 49.8),
    ]
    for batch, running, waiting, in_use, evictable, throughput in batches:
        rows = [r for r in REQUESTS if r[0] in batch]
        for rid, *_ in rows:
            collector.observe_per_stage_req_latency("request_process", PROCESS_S)
            collector.observe_queue_time(QUEUE_S[rid])
            collector.observe_per_stage_req_latency("prefill_forward", PREFILL_S)
        compute = sum(r[2] - r[3] for r in rows)
        hits = sum(r[3] for r in rows)
        collector.increment_prefill_cuda_graph_pass(value=False)
        collector.increment_realtime_tokens(
            None, prefill_compute_tokens=compute, prefill_cache_tokens=hits
        )
        collector.increment_effective_prefill_tokens(
            input_tokens=compute, device_hit_tokens=hits, host_hit_tokens=0, storage_hit_tokens=0
        )
        stats = SchedulerStats(
            num_running_reqs=QueueCount(total=running),
            num_queue_reqs=QueueCount(total=waiting),
            gen_throughput=throughput,
            cache_hit_rate=hits / (hits + compute),
            token_usage=round(in_use / MAX_TOTAL_TOKENS, 2),
            full_token_usage=in_use / MAX_TOTAL_TOKENS,
            num_used_tokens=in_use,
            kv_used_tokens=in_use,
            kv_evictable_tokens=evictable,
            kv_available_tokens=MAX_TOTAL_TOKENS - in_use - evictable,
            new_token_ratio=0.7,
        )
        collector.log_stats(stats)
    # Decode steps, one token per running request each.
    for running in [3] * 6 + [4] * 9 + [1] * 4:
        collector.increment_realtime_tokens(None, decode_tokens=running)
        collector.increment_decode_cuda_graph_pass(value=True)
    collector.increment_scheduler_idle_seconds(4.31)
    collector.increment_scheduler_process_cpu_seconds(1.07)
    for stage, seconds in (
        ("recv_requests", 0.012),
        ("process_input_requests", 0.004),
        ("get_next_batch_to_run", 0.021),
        ("run_batch", 0.402),
        ("process_batch_result", 0.037),
        ("idle", 4.31),
    ):
        collector.increment_scheduler_stage_seconds(stage, seconds, "none")


def _detokenizer() -> None:
    from sglang.srt.observability.cpu_monitor import start_cpu_monitor_thread

    start_cpu_monitor_thread("detokenizer", interval=0.05)
    time.sleep(0.3)


def main(root: Path) -> bytes:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sglang-prom-")
    sys.meta_path.insert(0, _Finder(root))
    fork = multiprocessing.get_context("fork")
    for target in (_scheduler, _detokenizer):
        process = fork.Process(target=target)
        process.start()
        process.join()
        assert process.exitcode == 0, target

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry, make_asgi_app, multiprocess
    from sglang.srt.observability.cpu_monitor import start_cpu_monitor_thread
    from sglang.srt.observability.func_timer import enable_func_timer
    from sglang.srt.observability.http_request_metrics import (
        add_http_request_metrics_middleware,
        init_http_request_metrics,
    )
    from sglang.srt.observability.metrics_collector import TokenizerMetricsCollector
    from starlette.routing import Mount

    # The tokenizer manager's process: its collector, the HTTP server's metrics.
    labels = {"model_name": MODEL, "engine_type": "unified"}
    tokenizer = TokenizerMetricsCollector(server_args=None, labels=labels)
    tokenizer.emit_startup_time(
        {
            "load_weight": 2.84,
            "kv_cache_allocation": 0.61,
            "scheduler_e2e": 19.7,
            "tokenizer_e2e": 21.2,
            "cuda_graph": {"prefill": 0.0, "decode": 11.3},
        }
    )
    start_cpu_monitor_thread("tokenizer", interval=0.05)
    enable_func_timer()
    init_http_request_metrics()
    for rid, _arrival, prompt, cached, generated, reason in REQUESTS:
        if not generated:
            continue
        ttft = PROCESS_S + QUEUE_S[rid] + PREFILL_S + 0.004
        tokenizer.observe_time_to_first_token(labels, ttft, stream=True)
        for _ in range(generated - 1):
            tokenizer.observe_inter_token_latency(labels, STEP_S, 1)
        if reason is None:
            continue
        tokenizer.observe_one_finished_request(
            labels,
            prompt,
            generated,
            cached,
            ttft + STEP_S * (generated - 1),
            False,
            {"device": cached, "host": 0} if cached else None,
            is_streaming=True,
            time_per_output_token=STEP_S,
        )

    app = FastAPI()
    release = threading.Event()

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> dict[str, str]:
        if body.get("hold"):
            release.wait(10)
        return {"object": "chat.completion"}

    add_http_request_metrics_middleware(app)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    app.routes.append(Mount("/metrics", make_asgi_app(registry=registry)))

    with TestClient(app) as client:
        finished = [r for r in REQUESTS if r[5] is not None]
        for _ in finished:
            client.post("/v1/chat/completions", json={"model": MODEL})
        client.get("/metrics/")  # an earlier scrape
        held = [
            threading.Thread(
                target=client.post,
                args=("/v1/chat/completions",),
                kwargs={"json": {"model": MODEL, "hold": True}},
            )
            for r in REQUESTS
            if r[5] is None
        ]
        for thread in held:
            thread.start()
        time.sleep(0.5)
        body = client.get("/metrics/").content
        release.set()
        for thread in held:
            thread.join()
    return body


if __name__ == "__main__":
    sys.stdout.buffer.write(main(Path(sys.argv[1]).resolve()))
