"""Timing truth: how far each client's TTFT, first-token arrival and inter-token gaps are
from the simulator's own account of the same request, for streamobs' prober, the OpenAI
Python SDK streaming loop a user would write, and an aiohttp loop as `vllm bench serve`
does, side by side in one run, quiet and with every core kept busy.

The simulator runs in its own process and stamps from the kernel: receipt of the request
(receive stamp of its last read) and every write (transmit stamp), so its account stays
true on an overloaded machine. Both processes put kernel stamps on CLOCK_MONOTONIC.

- TTFT error: client TTFT - (server receipt -> first token write).
- first-token arrival error: client's first-token stamp - server's first-token write.
- ITL error: client gap - server gap, for each later token.
Under contention streamobs also says which of its probes it cannot vouch for (degraded):
the table counts the probes whose real error passed 1 ms and that it did *not* flag.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

import requests

from benchmarks.net import free_port
from streamobs.probe import ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.stats import quantile

MODEL = "bench"
TOKENS = 32
TOLERANCE_NS = 1_000_000  # an error past this must be flagged (DESIGN.md)
BURST_NS = 1_000_000  # writes closer than this went out as one burst


@dataclass(frozen=True)
class Stream:
    """What one client saw of one response."""

    response_id: str
    ttft_ns: int  # the client's own TTFT
    arrivals_ns: tuple[int, ...]  # each content token, perf_counter_ns
    degraded: bool = False  # streamobs only: the probe said its stamps are not exact
    buffered: bool = False


@dataclass(frozen=True)
class Fidelity:
    client: str
    streams: int
    contention: bool
    ttft_p50_ms: float
    ttft_p99_ms: float
    arrival_p50_ms: float
    arrival_p99_ms: float
    itl_p99_ms: float
    samples: int
    degraded: int  # probes kept out of the figures above (streamobs only)
    unflagged: int  # probes whose real error passed 1 ms, not flagged degraded
    buffered: int  # direct-path probes called buffered


@contextmanager
def simulator_process(ttft: float = 0.05, itl: float = 0.02) -> Iterator[str]:
    """`streamobs simulate` in its own process, so it does not share our GIL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "simulate", "--port", str(port),
         "--model", MODEL, "--ttft", str(ttft), "--itl", str(itl), "--jitter", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url + "/health", timeout=0.5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def busy_cores(enabled: bool, seconds: float = 900.0) -> Iterator[None]:
    """As many busy-looping processes as cores, each ending by itself after ``seconds``
    even if this process dies first."""
    procs: list[subprocess.Popen[bytes]] = []
    if enabled:
        loop = (
            f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
        )
        procs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def server_record(url: str, response_id: str) -> dict[str, object]:
    record: dict[str, object] = requests.get(
        f"{url}/sim/requests/{response_id}?wait=5", timeout=10
    ).json()
    return record


# -- the three clients ----------------------------------------------------------------


def streamobs_streams(url: str, n: int) -> list[Stream]:
    spec = ProbeSpec(
        target=parse_target(url),
        model=MODEL,
        max_tokens=TOKENS,
        timeouts=Timeouts(total=60),
    )
    out: list[Stream] = []
    lock = threading.Lock()

    def one() -> None:
        result = run_probe(spec)
        if result.ok and result.response_id and result.request_sent_ns is not None:
            sent = result.start_ns + result.request_sent_ns
            assert result.first_token_ns is not None
            stream = Stream(
                result.response_id,
                result.first_token_ns,
                tuple(sent + t for t in result.token_arrivals_ns),
                degraded=not result.exact,
                buffered=result.delivery is not None and result.delivery.buffered,
            )
            with lock:
                out.append(stream)

    _in_threads(one, n)
    return out


def openai_sdk_streams(url: str, n: int) -> list[Stream]:
    from openai import OpenAI

    client = OpenAI(api_key="bench", base_url=url + "/v1", max_retries=0)
    out: list[Stream] = []
    lock = threading.Lock()

    def one() -> None:
        # The loop a user writes: start a clock, stream=True, stamp each non-empty delta.
        started = time.perf_counter_ns()
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "count"}],
            max_tokens=TOKENS,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        arrivals: list[int] = []
        response_id = ""
        for chunk in stream:
            now = time.perf_counter_ns()
            response_id = response_id or chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(now)
        if arrivals:
            with lock:
                out.append(Stream(response_id, arrivals[0] - started, tuple(arrivals)))

    _in_threads(one, n)
    return out


def aiohttp_streams(url: str, n: int) -> list[Stream]:
    import aiohttp

    async def one(session: aiohttp.ClientSession) -> Stream | None:
        # As vllm bench serve's backend_request_func: perf_counter before the post, iterate
        # response.content (lines), strip "data: ", stamp when a chunk with text arrives.
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "count"}],
            "max_tokens": TOKENS,
            "stream": True,
            "ignore_eos": True,
        }
        arrivals: list[int] = []
        response_id = ""
        started = time.perf_counter_ns()
        async with session.post(url + "/v1/chat/completions", json=payload) as response:
            async for chunk_bytes in response.content:
                now = time.perf_counter_ns()
                chunk_bytes = chunk_bytes.strip()
                if not chunk_bytes:
                    continue
                text = chunk_bytes.decode("utf-8").removeprefix("data: ")
                if text == "[DONE]":
                    continue
                data = json.loads(text)
                response_id = response_id or data.get("id", "")
                choices = data.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    arrivals.append(now)
        return Stream(response_id, arrivals[0] - started, tuple(arrivals)) if arrivals else None

    async def many() -> list[Stream]:
        timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            streams = await asyncio.gather(*(one(session) for _ in range(n)))
            return [s for s in streams if s is not None]

    return asyncio.run(many())


CLIENTS: dict[str, Callable[[str, int], list[Stream]]] = {
    "streamobs": streamobs_streams,
    "openai-sdk": openai_sdk_streams,
    "aiohttp": aiohttp_streams,
}


def _in_threads(work: Callable[[], None], n: int) -> None:
    threads = [threading.Thread(target=work) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- measuring ------------------------------------------------------------------------


@dataclass
class _Errors:
    ttft: list[float]
    arrival: list[float]
    itl: list[float]
    degraded: int = 0
    unflagged: int = 0
    buffered: int = 0


def _account(errors: _Errors, stream: Stream, record: dict[str, object]) -> None:
    writes = tuple(int(w) for w in record["token_write_ns"])  # type: ignore[attr-defined]
    received = int(record["received_ns"])  # type: ignore[call-overload]
    if len(writes) != len(stream.arrivals_ns) or not writes:
        return
    ttft = stream.ttft_ns - (writes[0] - received)
    arrival = stream.arrivals_ns[0] - writes[0]
    gaps = [
        (stream.arrivals_ns[k] - stream.arrivals_ns[k - 1]) - (writes[k] - writes[k - 1])
        for k in range(1, len(writes))
    ]
    worst = max([abs(ttft), *(abs(g) for g in gaps)])
    # A starved simulator writes late tokens back to back: a burst on the wire, which the
    # client is right to see. Only a verdict against spread-out writes is wrong.
    bunched = sum(1 for a, b in pairwise(writes) if b - a < BURST_NS)
    errors.buffered += stream.buffered and bunched < len(writes) / 2
    if stream.degraded:
        errors.degraded += 1
        return  # kept out of the histograms: out of these figures too
    errors.unflagged += worst > TOLERANCE_NS
    errors.ttft.append(abs(ttft))
    errors.arrival.append(abs(arrival))
    errors.itl.extend(abs(g) for g in gaps)


def fidelity(url: str, client: str, streams: int, rounds: int, contention: bool) -> Fidelity:
    errors = _Errors([], [], [])
    for _ in range(rounds):
        for stream in CLIENTS[client](url, streams):
            _account(errors, stream, server_record(url, stream.response_id))
    if not errors.ttft:
        raise RuntimeError(f"{client}: no usable streams")
    return Fidelity(
        client=client,
        streams=streams,
        contention=contention,
        ttft_p50_ms=quantile(errors.ttft, 0.5) / 1e6,
        ttft_p99_ms=quantile(errors.ttft, 0.99) / 1e6,
        arrival_p50_ms=quantile(errors.arrival, 0.5) / 1e6,
        arrival_p99_ms=quantile(errors.arrival, 0.99) / 1e6,
        itl_p99_ms=quantile(errors.itl, 0.99) / 1e6 if errors.itl else 0.0,
        samples=len(errors.ttft),
        degraded=errors.degraded,
        unflagged=errors.unflagged,
        buffered=errors.buffered,
    )


def run_fidelity(
    concurrency: tuple[int, ...] = (1, 16, 64),
    rounds: int = 5,
    contention: tuple[bool, ...] = (False, True),
) -> list[Fidelity]:
    results = []
    with simulator_process() as url:
        for busy in contention:
            with busy_cores(busy):
                for streams in concurrency:
                    # Side by side, interleaved so drift hits every client alike.
                    for client in CLIENTS:
                        n = max(1, rounds * 16 // streams)
                        results.append(fidelity(url, client, streams, n, busy))
    return results
