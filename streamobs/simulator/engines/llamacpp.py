"""llama.cpp server (``llama-server --metrics``) ``/metrics``, fed by the simulator's events.

llama.cpp writes its Prometheus text by hand (``server_task_result_metrics::to_metrics`` in
``tools/server/server-task.cpp``): every family is one unlabelled series, in a fixed order,
each with ``# HELP llamacpp:<name> <text>`` and ``# TYPE llamacpp:<name> <type>`` lines,
values written by a C++ ``std::stringstream`` (6 significant digits, ``%g``-like:
``1.23457e+06``, ``0.0205``, ``137``). Counters are cumulative since the start; the two
throughput gauges are averaged over the window since the previous scrape, and a scrape
resets that window. No label carries the model name.

The simulator decodes one request per step: its prompt is one decode call when it is
admitted, each further token one more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from streamobs.simulator.engines.base import EngineMetrics, Running


def cpp_double(value: float) -> str:
    """``value`` as ``std::ostream << double`` writes it with default flags and precision."""
    return format(value, ".6g")


@dataclass
class _Bucket:
    count: int = 0  # tokens
    steps: int = 0  # decode steps (for generation, the first token is free)
    seconds: float = 0.0

    def add(self, count: int, steps: int, seconds: float) -> None:
        self.count += count
        self.steps += steps
        self.seconds += seconds

    def per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


# (name, HELP) in the order llama.cpp writes them.
_COUNTERS = (
    ("prompt_tokens_total", "Number of prompt tokens processed, excluding cached tokens"),
    ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache"),
    ("prompt_seconds_total", "Total time spent processing prompts"),
    ("tokens_predicted_total", "Number of generation tokens processed"),
    ("tokens_predicted_seconds_total", "Total time spent generating tokens"),
    (
        "n_decode_total",
        "Total number of llama_decode() calls, excluding speculative decoding and multimodal "
        "decoding",
    ),
    ("n_tokens_max", "Largest observed sequence length (prompt + generation)"),
    ("spec_decode_num_draft_tokens_total", "Speculative: Total draft tokens generated"),
    (
        "spec_decode_num_accepted_tokens_total",
        "Speculative: Total draft tokens accepted by the target model",
    ),
    ("spec_decode_num_drafts_total", "Speculative: Total speculative decoding verification steps"),
)
_GAUGES = (
    ("prompt_tokens_seconds", "Average prompt throughput in tokens/s"),
    ("predicted_tokens_seconds", "Average generation throughput in tokens/s"),
    ("requests_processing", "Number of requests processing"),
    ("requests_deferred", "Number of requests deferred"),
    ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call"),
)


class LlamacppMetrics(EngineMetrics):
    """llama-server's ``llamacpp:`` families (llama.cpp ``0c1e57098``)."""

    kind = "llamacpp"

    def declare(self, registry: CollectorRegistry) -> None:
        # Nothing goes in the prometheus_client registry: render() writes the text itself.
        self._state = threading.Lock()
        self._prompt = _Bucket()
        self._predict = _Bucket()
        self._prompt_window = _Bucket()
        self._predict_window = _Bucket()
        self._n_decode = 0
        self._n_busy_slots = 0
        self._n_tokens_max = 0
        self._gen_seconds: dict[str, float] = {}  # per request: first to last token

    def _decode_call(self, sequence_tokens: int) -> None:
        busy = sum(self.running_count(m) for m in self._model_names())
        with self._state:
            self._n_decode += 1
            self._n_busy_slots += busy
            self._n_tokens_max = max(self._n_tokens_max, sequence_tokens)

    def _model_names(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def first_token(self, model: str, request_id: str, prompt_tokens: int, ttft_s: float) -> None:
        super().first_token(model, request_id, prompt_tokens, ttft_s)
        with self._lock:
            prefill_s = self._running[model][request_id].prefill_seconds or 0.0
        self._decode_call(prompt_tokens)
        with self._state:
            # Prompt tokens are counted per decode batch once the context is synchronised.
            self._prompt.add(prompt_tokens, prompt_tokens, prefill_s)
            self._prompt_window.add(prompt_tokens, prompt_tokens, prefill_s)
            self._gen_seconds[request_id] = 0.0

    def token(self, model: str, request_id: str, itl_s: float | None) -> None:
        super().token(model, request_id, itl_s)
        if itl_s is None:
            return  # the first token comes from the prompt's last batch
        with self._lock:
            request = self._running[model][request_id]
            sequence = request.prompt_tokens + request.generated
        self._decode_call(sequence)
        with self._state:
            self._gen_seconds[request_id] = self._gen_seconds.get(request_id, 0.0) + itl_s

    def finished(
        self, model: str, request_id: str, finished_reason: str | None, e2e_s: float
    ) -> None:
        with self._lock:
            request = self._running[model].get(request_id)
            generated = request.generated if request is not None else 0
        super().finished(model, request_id, finished_reason, e2e_s)
        with self._state:
            seconds = self._gen_seconds.pop(request_id, 0.0)
            if generated > 0:
                # Counted when the slot is released, whatever ended the request.
                steps = generated - 1
                self._predict.add(generated, steps, seconds)
                self._predict_window.add(generated, steps, seconds)

    def on_finished(self, model: str, reason: str, e2e_s: float, request: Running) -> None:
        pass

    def render(self) -> bytes:
        models = self._model_names()
        processing = sum(self.running_count(m) for m in models)
        deferred = sum(self.waiting_count(m) for m in models)
        with self._state:
            counters = (
                self._prompt.count,
                0,  # nothing is reused from a prompt cache here
                self._prompt.seconds,
                self._predict.count,
                self._predict.seconds,
                self._n_decode,
                self._n_tokens_max,
                0,
                0,
                0,
            )
            gauges = (
                self._prompt_window.per_second(),
                self._predict_window.per_second(),
                processing,
                deferred,
                self._n_busy_slots / max(self._n_decode, 1),
            )
            # A scrape closes the throughput window.
            self._prompt_window = _Bucket()
            self._predict_window = _Bucket()
        out: list[str] = []
        for kind, items, values in (
            ("counter", _COUNTERS, counters),
            ("gauge", _GAUGES, gauges),
        ):
            for (name, help_text), value in zip(items, values, strict=True):
                out.append(f"# HELP llamacpp:{name} {help_text}\n")
                out.append(f"# TYPE llamacpp:{name} {kind}\n")
                out.append(f"llamacpp:{name} {cpp_double(float(value))}\n")
        return "".join(out).encode()
