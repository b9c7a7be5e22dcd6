"""Capture ``metrics.txt`` from a real LiteLLM proxy 1.110.2 in front of one backend.

Not part of the test suite (it needs LiteLLM installed). To run it, in a throwaway venv, in a
network namespace that has only loopback (nothing can leave the machine):

    python -m venv venv
    venv/bin/pip install litellm==1.110.2 prometheus_client==0.26.0 fastapi uvicorn \\
        apscheduler orjson backoff pyjwt python-multipart cryptography pynacl websockets \\
        rq mcp restrictedpython litellm-enterprise litellm-proxy-extras fastapi-sso httpx
    unshare -n sh -c 'ip link set lo up && \\
        venv/bin/python tests/data/litellm/render.py > tests/data/litellm/metrics.txt'

(``litellm[proxy]`` itself cannot be installed from PyPI for 1.110.2: it pins a
``litellm-proxy`` release that is not published, so the proxy's dependencies are listed.)

What runs: this script serves a small OpenAI-compatible backend on 127.0.0.1 (model
``tiny``: streamed chat completions, about 150 ms to the first token, 20 ms per token,
``usage`` in the last chunk), starts the proxy's own CLI (``litellm --config``) with the
``prometheus`` callback (``litellm/integrations/prometheus.py``, ``PrometheusLogger``) and
one deployment ``tiny`` -> ``openai/tiny`` at that backend, sends six streaming chat
requests through the proxy (four run to the end, two are still streaming at the
scrape), and GETs the proxy's ``/metrics``. A throwaway master key (the proxy refuses to start
without one) and no database: requests authenticate with the master key.
``LITELLM_LOCAL_MODEL_COST_MAP`` keeps LiteLLM on its bundled price list instead of
fetching one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

TTFT_S = 0.15
ITL_S = 0.02
HOLD = threading.Event()
# A throwaway master key: the proxy refuses to start without one.
MASTER_KEY = "sk-" + secrets.token_hex(32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _chat(request: Request) -> StreamingResponse | JSONResponse:
    body = await request.json()
    n = int(body.get("max_tokens") or 16)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"]) + 8
    hold = "hold" in json.dumps(body["messages"])

    async def stream():  # type: ignore[no-untyped-def]
        base = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "tiny",
        }
        await asyncio.sleep(TTFT_S)
        for i in range(n):
            if i:
                await asyncio.sleep(ITL_S)
            delta = {"role": "assistant", "content": " tok"} if i == 0 else {"content": " tok"}
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
            while hold and i == 4 and not HOLD.is_set():
                await asyncio.sleep(0.01)
        done = {"index": 0, "delta": {}, "finish_reason": "length"}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
        usage["total_tokens"] = prompt_tokens + n
        yield f"data: {json.dumps({**base, 'choices': [done], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def _models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "tiny", "object": "model"}]})


def _backend(port: int) -> None:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/models", _models),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _chat_request(proxy: str, text: str, max_tokens: int) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    with httpx.stream(
        "POST", f"{proxy}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        response.raise_for_status()
        for _ in response.iter_lines():
            pass


def main() -> bytes:
    backend_port, proxy_port = _free_port(), _free_port()
    threading.Thread(target=_backend, args=(backend_port,), daemon=True).start()
    workdir = Path(tempfile.mkdtemp(prefix="litellm-"))
    config = workdir / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: tiny\n"
        "    litellm_params:\n"
        "      model: openai/tiny\n"
        f"      api_base: http://127.0.0.1:{backend_port}/v1\n"
        "      api_key: sk-backend-not-checked\n"
        "litellm_settings:\n"
        '  callbacks: ["prometheus"]\n'
        "  telemetry: false\n"
    )
    env = dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_MASTER_KEY=MASTER_KEY,
    )
    litellm = Path(sys.executable).with_name("litellm")
    proxy = subprocess.Popen(
        [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(proxy_port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "proxy.log").open("wb"),
    )
    url = f"http://127.0.0.1:{proxy_port}"
    # /metrics asks for a key too (``require_auth_for_metrics_endpoint`` defaults to true).
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        for text, max_tokens in (
            ("say something short", 16),
            ("and something longer than that", 16),
            ("stop early", 7),
            ("one more please", 16),
        ):
            _chat_request(url, text, max_tokens)
        # An earlier scrape.
        httpx.get(f"{url}/metrics", headers=auth, timeout=10, follow_redirects=True)
        held = [
            threading.Thread(target=_chat_request, args=(url, "hold this one", 16)),
            threading.Thread(target=_chat_request, args=(url, "hold this one too", 16)),
        ]
        for thread in held:
            thread.start()
        time.sleep(1.5)  # all metrics writes are done off the request path
        body = httpx.get(f"{url}/metrics", headers=auth, timeout=10, follow_redirects=True).content
        HOLD.set()
        for thread in held:
            thread.join()
        return body
    finally:
        proxy.terminate()
        proxy.wait(30)


if __name__ == "__main__":
    sys.stdout.buffer.write(main())
