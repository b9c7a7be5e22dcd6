"""Timing fidelity: how far each client's TTFT and inter-token stamps are from the moment
the simulator wrote each event, for streamobs' prober, the OpenAI Python SDK streaming loop
a user would write, and an aiohttp loop as `vllm bench serve` does.

The simulator runs in its own process and stamps ``perf_counter_ns`` (CLOCK_MONOTONIC,
shared by every process on the host) right after each write; each client stamps when it
got the bytes. Error = |arrival - write| for the first token, and |client gap - server gap|
for each later token.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests

from streamobs.probe import ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.stats import quantile
from tests.fixtures import free_port

MODEL = "bench"
TOKENS = 32


@dataclass(frozen=True)
class Stream:
    """What one client saw of one response: arrival stamps of each content token."""

    response_id: str
    arrivals_ns: tuple[int, ...]


@dataclass(frozen=True)
class Fidelity:
    client: str
    streams: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    samples: int


@contextmanager
def simulator_process(ttft: float = 0.05, itl: float = 0.02) -> Iterator[str]:
    """`streamobs simulate` in its own process, so it does not share our GIL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamobs", "simulate", "--port", str(port),
         "--model", MODEL, "--ttft", str(ttft), "--itl", str(itl)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(url + "/health", timeout=0.5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def server_writes(url: str, response_id: str) -> tuple[int, ...]:
    record = requests.get(f"{url}/sim/requests/{response_id}?wait=5", timeout=10).json()
    return tuple(record["token_write_ns"])


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
        if result.ok and result.response_id:
            arrivals = tuple(result.start_ns + t for t in result.token_arrivals_ns)
            with lock:
                out.append(Stream(result.response_id, arrivals))

    _in_threads(one, n)
    return out


def openai_sdk_streams(url: str, n: int) -> list[Stream]:
    from openai import OpenAI

    client = OpenAI(api_key="bench", base_url=url + "/v1", max_retries=0)
    out: list[Stream] = []
    lock = threading.Lock()

    def one() -> None:
        # The loop a user writes: stream=True, stamp each non-empty delta as it is yielded.
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
        with lock:
            out.append(Stream(response_id, tuple(arrivals)))

    _in_threads(one, n)
    return out


def aiohttp_streams(url: str, n: int) -> list[Stream]:
    import aiohttp

    async def one(session: aiohttp.ClientSession) -> Stream:
        # As vllm bench serve's backend_request_func: iterate response.content (lines),
        # strip "data: ", stamp with perf_counter when a chunk with text arrives.
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "count"}],
            "max_tokens": TOKENS,
            "stream": True,
            "ignore_eos": True,
        }
        arrivals: list[int] = []
        response_id = ""
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
        return Stream(response_id, tuple(arrivals))

    async def many() -> list[Stream]:
        timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(await asyncio.gather(*(one(session) for _ in range(n))))

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


def fidelity(url: str, client: str, streams: int, rounds: int) -> Fidelity:
    ttft_errors: list[float] = []
    itl_errors: list[float] = []
    for _ in range(rounds):
        for stream in CLIENTS[client](url, streams):
            writes = server_writes(url, stream.response_id)
            if len(writes) != len(stream.arrivals_ns) or not writes:
                continue
            # Magnitudes: a kernel receive stamp can precede the server's own stamp, which is
            # taken after its write call returned.
            ttft_errors.append(abs(stream.arrivals_ns[0] - writes[0]))
            for k in range(1, len(writes)):
                client_gap = stream.arrivals_ns[k] - stream.arrivals_ns[k - 1]
                itl_errors.append(abs(client_gap - (writes[k] - writes[k - 1])))
    if not ttft_errors:
        raise RuntimeError(f"{client}: no usable streams")
    return Fidelity(
        client=client,
        streams=streams,
        ttft_p50_ms=quantile(ttft_errors, 0.5) / 1e6,
        ttft_p99_ms=quantile(ttft_errors, 0.99) / 1e6,
        itl_p50_ms=quantile(itl_errors, 0.5) / 1e6,
        itl_p99_ms=quantile(itl_errors, 0.99) / 1e6,
        samples=len(ttft_errors),
    )


def run_fidelity(concurrency: tuple[int, ...] = (1, 16, 64), rounds: int = 5) -> list[Fidelity]:
    results = []
    with simulator_process() as url:
        for streams in concurrency:
            # Side by side in the same run, interleaved so drift hits every client alike.
            for client in CLIENTS:
                results.append(fidelity(url, client, streams, max(1, rounds * 16 // streams)))
    return results
