"""Render ``v033-metrics.txt`` with vLLM 0.33.0's own metrics code.

Not part of the test suite (it needs the vLLM wheel). To run it, in a throwaway venv:

    pip download vllm==0.33.0 --no-deps -d pkgs
    unzip -q pkgs/vllm-0.33.0-*.whl 'vllm/*' -d vllm-0.33.0
    python -m venv venv
    venv/bin/pip install prometheus_client==0.26.0 'fastapi<0.137,>=0.133' \\
        prometheus-fastapi-instrumentator regex httpx numpy pydantic msgspec
    venv/bin/python tests/data/vllm/render_v033.py vllm-0.33.0 > tests/data/vllm/v033-metrics.txt

What runs is vLLM's own code, loaded from the unpacked wheel: ``vllm/v1/metrics/loggers.py``
(``PrometheusStatLogger``), ``stats.py`` (``IterationStats``, ``SchedulerStats``,
``RequestStateStats``, ``PrefillStats``), ``buckets.py``, ``perf.py`` (``PerfMetricsProm``;
MFU metrics are off by default, so its counters stay at 0),
``vllm/v1/spec_decode/metrics.py``, the KV/EC connector metrics modules, and
``vllm/entrypoints/serve/instrumentator/metrics.py`` (``attach_router``: the HTTP
instrumentator and the ``/metrics`` mount). Their heavy imports (torch, the config classes,
the platform layer) are replaced by inert stand-ins; ``FinishReason`` and
``EngineCoreEventType`` are taken from ``vllm/v1/engine/__init__.py`` by source.

The traffic replayed is one served model ``tiny`` (``max_model_len`` 1024, one engine):
six chat requests: four finished (three by ``length`` after 16 tokens, one by ``stop``
after 7), one still decoding and one still waiting, at 20 ms per engine step. The scrape is one
in-process GET of ``/metrics`` through the app, as a Prometheus server would see it.
``vllm:cache_config_info``'s labels are the CPU capture's (``vllm-0.32-cpu/metrics.txt``)
plus the field 0.33's ``CacheConfig`` adds (``simple_cpu_offload_num_blocks``).
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

# The vLLM modules run as they are; every other vllm.* module (and torch) is a stand-in.
_REAL = {
    "vllm.envs",
    "vllm.v1.metrics.loggers",
    "vllm.v1.metrics.buckets",
    "vllm.v1.metrics.cache_hit_source",
    "vllm.v1.metrics.prometheus",
    "vllm.v1.metrics.stats",
    "vllm.v1.metrics.utils",
    "vllm.v1.metrics.perf",
    "vllm.v1.spec_decode.metrics",
    "vllm.distributed.kv_transfer.kv_connector.v1.metrics",
    "vllm.distributed.ec_transfer.ec_connector.metrics",
    "vllm.entrypoints.serve.instrumentator.metrics",
}
_PACKAGES = {name.rsplit(".", i)[0] for name in _REAL for i in range(1, name.count(".") + 1)}


class _Inert(types.ModuleType):
    """A module whose every attribute is a fresh, empty class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {})
        setattr(self, name, value)
        return value


def _engine_module(root: Path) -> types.ModuleType:
    """``FinishReason``, ``FINISH_REASON_STRINGS`` and ``EngineCoreEventType``, by source."""
    source = (root / "vllm/v1/engine/__init__.py").read_text()
    wanted = {"FINISH_REASON_STRINGS", "FinishReason", "EngineCoreEventType"}
    nodes = [
        node
        for node in ast.parse(source).body
        if (isinstance(node, ast.ClassDef) and node.name in wanted)
        or (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in wanted for t in node.targets)
        )
    ]
    module = _Inert("vllm.v1.engine")
    module.__dict__["enum"] = __import__("enum")
    exec(
        compile(ast.Module(body=nodes, type_ignores=[]), "vllm/v1/engine", "exec"), module.__dict__
    )
    return module


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        top = fullname.split(".")[0]
        if top not in ("vllm", "torch"):
            return None
        if fullname in _REAL:
            location = self.root / (fullname.replace(".", "/") + ".py")
            return importlib.util.spec_from_file_location(fullname, location)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        if spec.name == "vllm.v1.engine":
            return _engine_module(self.root)
        module = _Inert(spec.name)
        if spec.name in _PACKAGES:
            module.__path__ = [str(self.root / spec.name.replace(".", "/"))]
        else:
            module.__path__ = []
        if spec.name == "vllm.logger":
            module.__dict__["init_logger"] = logging.getLogger
        if spec.name == "vllm.plugins":
            module.__dict__["load_plugins_by_group"] = lambda group: {}
            module.__dict__["STAT_LOGGER_PLUGINS_GROUP"] = "vllm.stat_logger_plugins"
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _ns(**kwargs: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**kwargs)


# vLLM 0.32's CPU capture, whose CacheConfig has the same fields but one.
_CACHE_CONFIG_INFO = {
    "_block_size_resolved": "True",
    "block_size": "128",
    "cache_dtype": "auto",
    "cache_hit_alignment_tokens": "None",
    "effective_attention_block_size": "128",
    "enable_mamba_shared_prefix_checkpoint": "False",
    "enable_prefix_caching": "True",
    "gpu_memory_utilization": "0.92",
    "hash_block_size": "None",
    "is_attention_free": "False",
    "kv_cache_dtype_skip_layers": "[]",
    "kv_cache_layout": "None",
    "kv_cache_max_concurrency": "512.0",
    "kv_cache_memory_bytes": "1073741824",
    "kv_cache_size_tokens": "524288",
    "kv_offloading_backend": "native",
    "kv_offloading_size": "None",
    "kv_sharing_fast_prefill": "False",
    "mamba_block_size": "None",
    "mamba_cache_dtype": "auto",
    "mamba_cache_mode": "none",
    "mamba_page_size_padded": "None",
    "mamba_ssm_cache_dtype": "auto",
    "num_cpu_blocks": "None",
    "num_gpu_blocks": "4096",
    "num_gpu_blocks_override": "None",
    "prefix_cache_retention_interval": "0",
    "prefix_caching_hash_algo": "sha256",
    "prefix_match_unit": "None",
    "replayssm_buffer_len": "16",
    "simple_cpu_offload_num_blocks": "None",
    "skip_page_size_padded": "None",
    "sliding_window": "None",
    "swa_bounded_replay": "True",
    "use_kda_recoverssm": "False",
    "use_replayssm": "False",
    "user_specified_block_size": "False",
}

STEP_S = 0.02  # one engine step (decode of the whole batch)
KV_TOKENS = 524288


def main(root: Path) -> bytes:
    sys.meta_path.insert(0, _Finder(root))
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from vllm.entrypoints.serve.instrumentator.metrics import attach_router
    from vllm.v1.engine import EngineCoreEventType, FinishReason
    from vllm.v1.metrics.loggers import PrometheusStatLogger
    from vllm.v1.metrics.stats import (
        IterationStats,
        LoRARequestStates,
        PrefillStats,
        PrefixCacheStats,
        RequestStateStats,
        SchedulerStats,
    )

    config = _ns(
        observability_config=_ns(
            show_hidden_metrics=False, kv_cache_metrics=False, custom_histogram_buckets=None
        ),
        model_config=_ns(served_model_name="tiny", max_model_len=1024, is_diffusion=False),
        speculative_config=None,
        kv_transfer_config=None,
        ec_transfer_config=None,
        watermark_config=None,
        lora_config=None,
        cache_config=_ns(metrics_info=lambda: dict(_CACHE_CONFIG_INFO)),
    )
    stat_logger = PrometheusStatLogger(config, [0])  # type: ignore[arg-type]
    stat_logger.log_engine_initialized()

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat() -> dict[str, str]:
        return {"object": "chat.completion"}

    attach_router(app)
    client = TestClient(app)

    # (request id, arrival, prompt tokens, cached prompt tokens, tokens to generate, reason)
    requests = [
        ("r0", 0.000, 24, 0, 16, FinishReason.LENGTH),
        ("r1", 0.010, 31, 16, 16, FinishReason.LENGTH),
        ("r2", 0.030, 18, 0, 7, FinishReason.STOP),
        ("r3", 0.050, 40, 16, 16, FinishReason.LENGTH),
        ("r4", 0.400, 27, 0, 1000, None),  # still decoding at the scrape
        ("r5", 0.650, 22, 0, 1000, None),  # still waiting at the scrape
    ]
    t0 = float(int(time.time()) - 5)
    states: dict[str, RequestStateStats] = {}
    lora = LoRARequestStates(log_stats=True)
    # The scheduler admits the first three at once, r3 one step later; r4 arrives later and
    # r5 is not admitted before the scrape.
    admit_step = {"r0": 5, "r1": 5, "r2": 5, "r3": 6, "r4": 25, "r5": 10**6}
    for _ in requests:
        client.post("/v1/chat/completions", json={"model": "tiny"})
    step = 0
    while step < 30:
        now = t0 + 0.1 + step * STEP_S
        iteration = IterationStats()
        iteration.iteration_timestamp = now
        prefix = PrefixCacheStats()
        running = waiting = used = 0
        for rid, arrival, prompt, cached, to_generate, reason in requests:
            if t0 + arrival > now:
                continue
            stats = states.setdefault(rid, RequestStateStats(arrival_time=t0 + arrival))
            if stats.num_generation_tokens >= to_generate:
                continue
            if step < admit_step[rid]:
                waiting += 1
                continue
            running += 1
            events = None
            prefill = None
            is_prefilling = stats.num_generation_tokens == 0
            if is_prefilling:
                queued = t0 + arrival + 0.002
                events = [
                    _ns(type=EngineCoreEventType.QUEUED, timestamp=queued),
                    _ns(type=EngineCoreEventType.SCHEDULED, timestamp=now - STEP_S),
                ]
                prefill = PrefillStats()
                prefill.set(prompt, cached, 0)
                prefix.record(prompt, cached, preempted=False)
            output = _ns(
                request_id=rid,
                new_token_ids=[7],
                prefill_stats=prefill,
                events=events,
                num_nans_in_logits=0,
            )
            iteration.update_from_output(output, now, is_prefilling, stats, lora, None)
            if stats.num_generation_tokens >= to_generate and reason is not None:
                iteration.update_from_finished_request(reason, rid, prompt, 16, stats, cached)
                iteration.max_num_generation_tokens_iter.append(stats.num_generation_tokens)
                iteration.n_params_iter.append(1)
            else:
                used += prompt + stats.num_generation_tokens
        scheduler = SchedulerStats(
            num_running_reqs=running,
            num_waiting_reqs=waiting,
            kv_cache_usage=used / KV_TOKENS,
            prefix_cache_stats=prefix,
        )
        stat_logger.record(scheduler, iteration if running else None, None, 0)
        step += 1
    return client.get("/metrics").content


if __name__ == "__main__":
    sys.stdout.buffer.write(main(Path(sys.argv[1]).resolve()))
