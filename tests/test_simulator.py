"""The simulator against the vLLM 0.32 captures, its faults, its write stamps and /metrics."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from requests.structures import CaseInsensitiveDict

from streamobs.simulator import FAULT_HEADER, FAULTS, RequestRecord, Simulator, SimulatorConfig
from streamobs.simulator import cli as sim_cli
from streamobs.simulator.generation import token_deadlines
from streamobs.simulator.payloads import token_text
from streamobs.simulator.wire import Connection
from tests.fixtures import FIXTURES

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
FAST: dict[str, Any] = {"ttft": 0.005, "itl": 0.002}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Say something."}], "stream": True, **extra}


MakeSim = Callable[..., Simulator]


@pytest.fixture
def make_sim() -> Iterator[MakeSim]:
    started: list[Simulator] = []

    def make(seed: int | None = 7, **settings: Any) -> Simulator:
        sim = Simulator(SimulatorConfig(**{**FAST, **settings}), seed=seed).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@dataclass
class Received:
    """One streamed response as the client saw it, each event stamped on arrival."""

    status: int
    headers: CaseInsensitiveDict[str]
    headers_ns: int
    # (perf_counter_ns right after the read that completed the event, event bytes)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    leftover: bytes = b""
    error: Exception | None = None

    def data(self) -> list[bytes]:
        """The `data:` payloads, comments left out."""
        return [e[len(b"data: ") :] for _, e in self.events if e.startswith(b"data: ")]

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.data() if d != b"[DONE]"]

    def content_events(self) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for ns, event in self.events:
            if not event.startswith(b"data: {"):
                continue
            chunk = json.loads(event[len(b"data: ") :])
            choices = chunk.get("choices") or [{}]
            text = choices[0].get("delta", {}).get("content") or choices[0].get("text")
            if text:
                out.append((ns, chunk))
        return out

    def response_id(self) -> str:
        chunk_id: str = self.chunks()[0]["id"]
        return chunk_id


def stream(
    sim: Simulator,
    body: dict[str, Any],
    *,
    path: str = CHAT,
    fault: str | None = None,
    timeout: float = 5.0,
    stop_after_events: int | None = None,
) -> Received:
    headers = {FAULT_HEADER: fault} if fault else {}
    resp = requests.post(sim.url + path, json=body, headers=headers, stream=True, timeout=timeout)
    received = Received(resp.status_code, resp.headers, time.perf_counter_ns())
    buffer = b""
    try:
        while True:
            data = resp.raw.read1()
            now = time.perf_counter_ns()
            if not data:
                break
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                received.events.append((now, event))
            if stop_after_events is not None and len(received.events) >= stop_after_events:
                break
    except Exception as exc:  # the faults are expected to break the stream
        received.error = exc
    finally:
        resp.close()
    received.leftover = buffer
    return received


def capture_events(name: str) -> list[bytes]:
    raw = (FIXTURES / name).read_bytes()
    return [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e]


def shape(value: Any) -> Any:
    """Keys in order and value types, recursively: what must match a capture."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(sim: Simulator) -> Samples:
    text = requests.get(sim.url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    labels = {"engine": "0", "model_name": "sim-model", **labels}
    return samples[(name, tuple(sorted(labels.items())))]


def only_record(sim: Simulator) -> RequestRecord:
    """The one request served, once it has been served completely."""
    wait_for(lambda: len(sim.records()) == 1)
    record = sim.request_log(sim.records()[0].response_id, wait=3.0)
    assert record is not None and record.complete
    return record


def settle(sim: Simulator) -> None:
    """Wait until every request has been served completely (metrics are updated by then)."""
    for record in sim.records():
        done = sim.request_log(record.response_id, wait=3.0)
        assert done is not None and done.complete


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# --- shapes against the captures -------------------------------------------------------


def test_chat_stream_has_the_captured_shape(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=5)
    got = stream(sim, chat_body(stream_options={"include_usage": True}))
    assert got.status == 200 and got.error is None
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["transfer-encoding"] == "chunked"
    assert "server" in got.headers and "date" in got.headers

    captured = [json.loads(e) for e in capture_events("chat-stream-usage.sse")[:-1]]
    role, middle, last, usage = captured[0], captured[7], captured[-2], captured[-1]
    assert middle["choices"][0]["delta"]["content"] == " testing"  # a content chunk
    assert got.data()[-1] == b"[DONE]"
    chunks = got.chunks()
    assert len(chunks) == 1 + 5 + 1
    assert shape(chunks[0]) == shape(role)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for chunk in chunks[1:5]:
        assert shape(chunk) == shape(middle)
        assert chunk["choices"][0]["finish_reason"] is None
    assert shape(chunks[5]) == shape(last)
    assert chunks[5]["choices"][0]["finish_reason"] == "stop"
    assert shape(chunks[6]) == shape(usage)
    assert chunks[6]["choices"] == []
    assert chunks[6]["usage"]["completion_tokens"] == 5
    prompt = chunks[6]["usage"]["prompt_tokens"]
    assert prompt > 0 and chunks[6]["usage"]["total_tokens"] == prompt + 5
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert len(chunks[0]["id"]) == len(role["id"])
    assert {c["model"] for c in chunks} == {"sim-model"}
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:6]).strip()


def test_chat_stream_without_usage_ends_with_the_finish_chunk(make_sim: MakeSim) -> None:
    got = stream(make_sim(tokens=3), chat_body())
    chunks = got.chunks()
    assert got.data()[-1] == b"[DONE]"
    assert len(chunks) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["system_fingerprint"].startswith("vllm-0.32.0-")


def test_completions_stream_has_the_captured_shape(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=50)
    got = stream(sim, {"prompt": "Once upon", "max_tokens": 12, "stream": True}, path=COMPLETIONS)
    captured = [json.loads(e) for e in capture_events("completions-stream.sse")[:-1]]
    chunks = got.chunks()
    assert got.data()[-1] == b"[DONE]"
    assert len(chunks) == len(captured) == 12
    for mine, theirs in zip(chunks, captured, strict=True):
        assert shape(mine) == shape(theirs)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[0]["id"].startswith("cmpl-") and len(chunks[0]["id"]) == len(captured[0]["id"])
    assert all(c["choices"][0]["text"] for c in chunks)


@pytest.mark.parametrize(
    ("request_fields", "expected_tokens", "expected_finish"),
    [
        ({}, 6, "stop"),  # natural length
        ({"max_tokens": 3}, 3, "length"),
        ({"max_tokens": 6}, 6, "length"),
        ({"max_tokens": 10}, 6, "stop"),
        ({"max_tokens": 10, "ignore_eos": True}, 10, "length"),
        ({"max_completion_tokens": 2}, 2, "length"),
    ],
)
def test_token_count_rules(
    make_sim: MakeSim, request_fields: dict[str, Any], expected_tokens: int, expected_finish: str
) -> None:
    sim = make_sim(tokens=6, itl=0.0)
    got = stream(sim, chat_body(stream_options={"include_usage": True}, **request_fields))
    contents = got.content_events()
    assert len(contents) == expected_tokens
    assert contents[-1][1]["choices"][0]["finish_reason"] == expected_finish
    assert got.chunks()[-1]["usage"]["completion_tokens"] == expected_tokens
    record = sim.request_log(got.response_id())
    assert record is not None and record.tokens_sent == expected_tokens
    assert record.finish_reason == expected_finish


def test_ignore_eos_without_max_tokens_fills_the_context(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=4, itl=0.0, max_model_len=40)
    got = stream(sim, chat_body(ignore_eos=True, stream_options={"include_usage": True}))
    usage = got.chunks()[-1]["usage"]
    assert usage["completion_tokens"] == 40 - usage["prompt_tokens"]
    assert len(got.content_events()) == usage["completion_tokens"]


def test_non_streamed_completion(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=4)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    resp = requests.post(sim.url + CHAT, json=body, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    reply = resp.json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["content"] == " the stream of"
    assert reply["usage"]["completion_tokens"] == 3
    record = sim.request_log(reply["id"])
    assert record is not None and record.tokens_sent == 3 and record.stream is False
    assert record.done_write_ns is not None and set(record.token_write_ns) == {record.done_write_ns}

    resp = requests.post(sim.url + COMPLETIONS, json={"prompt": "x"}, timeout=5)
    assert resp.json()["object"] == "text_completion"
    assert resp.json()["choices"][0]["finish_reason"] == "stop"


def test_models_list_has_the_captured_shape(make_sim: MakeSim) -> None:
    sim = make_sim(max_model_len=2048)
    resp = requests.get(sim.url + "/v1/models", timeout=5)
    captured = json.loads((FIXTURES / "models.json").read_bytes())
    assert resp.status_code == 200
    assert shape(resp.json()) == shape(captured)
    model = resp.json()["data"][0]
    assert model["id"] == "sim-model" and model["max_model_len"] == 2048
    assert requests.get(sim.url + "/health", timeout=5).status_code == 200


def test_errors_are_byte_identical_to_the_captures(make_sim: MakeSim) -> None:
    # Configured like the captured server, the simulator's refusals are the same bytes.
    sim = make_sim(model="tiny", max_model_len=1024)
    messages = [{"role": "user", "content": "hi"}]
    bad_model = requests.post(
        sim.url + CHAT, json={"model": "nope", "messages": messages}, timeout=5
    )
    assert bad_model.status_code == 404
    assert bad_model.content == (FIXTURES / "chat-bad-model.body").read_bytes()
    assert bad_model.headers["content-type"] == "application/json"

    too_long = requests.post(
        sim.url + CHAT, json={"model": "tiny", "messages": messages, "max_tokens": 5000}, timeout=5
    )
    assert too_long.status_code == 400
    assert too_long.content == (FIXTURES / "chat-too-long.body").read_bytes()

    broken = requests.post(
        sim.url + CHAT, data=b"{not json", headers={"content-type": "application/json"}, timeout=5
    )
    assert broken.status_code == 400
    error = broken.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert "not valid JSON" in error["message"]
    assert sim.records() == []  # refused requests never reach the engine


def test_unknown_paths_and_methods(make_sim: MakeSim) -> None:
    sim = make_sim()
    assert requests.get(sim.url + "/nope", timeout=5).status_code == 404
    assert requests.get(sim.url + CHAT, timeout=5).status_code == 405
    assert requests.post(sim.url + "/metrics", json={}, timeout=5).status_code == 405


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_429", 429)])
def test_http_status_faults(make_sim: MakeSim, fault: str, status: int) -> None:
    sim = make_sim()
    got = stream(sim, chat_body(), fault=fault)
    assert got.status == status
    assert got.headers["content-type"] == "application/json"
    error = json.loads(got.leftover)["error"]  # a JSON body: no SSE events in it
    assert error["code"] == status and error["message"]
    if status == 429:
        assert got.headers["retry-after"] == "1"
    record = only_record(sim)
    assert record.fault == fault and record.status == status and record.tokens_sent == 0


def test_error_event_fault_is_the_captured_event_then_done(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=6)
    got = stream(sim, chat_body(), fault="error_event")
    assert got.status == 200 and got.error is None
    captured = (FIXTURES / "chat-stream-engine-dead.sse").read_bytes()
    assert [e for _, e in got.events[-2:]] == captured.split(b"\n\n")[:2]
    assert len(got.content_events()) == 3  # half of the tokens
    assert all(c["choices"][0]["finish_reason"] is None for c in got.chunks() if "choices" in c)
    record = sim.request_log(got.response_id())
    assert record is not None and record.finish_reason is None and record.done_write_ns


def test_truncate_fault_ends_cleanly_without_done(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=8)
    got = stream(sim, chat_body(), fault="truncate")
    assert got.error is None  # clean chunked end, then EOF
    assert b"[DONE]" not in got.data()
    assert len(got.content_events()) == 4
    assert all(c["choices"][0]["finish_reason"] is None for c in got.chunks())
    record = sim.request_log(got.response_id())
    assert record is not None and record.tokens_sent == 4 and record.done_write_ns is None


def test_reset_fault_breaks_the_connection(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=8)
    got = stream(sim, chat_body(), fault="reset")
    assert got.error is not None
    assert "reset" in repr(got.error).lower() or "broken" in repr(got.error).lower()
    assert b"[DONE]" not in got.data()
    record = sim.request_log(got.response_id())
    assert record is not None and record.complete
    assert record.fault == "reset" and record.tokens_sent == 4 and not record.client_disconnected


def test_stall_fault_sends_the_role_chunk_then_nothing(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=8)
    started = time.perf_counter()
    got = stream(sim, chat_body(), fault="stall", timeout=0.3)
    assert time.perf_counter() - started < 2.0
    assert got.error is not None and "timed out" in repr(got.error).lower()
    assert len(got.chunks()) == 1 and got.chunks()[0]["choices"][0]["delta"]["role"]
    record = sim.request_log(got.response_id(), wait=2.0)
    assert record is not None and record.complete and record.client_disconnected
    assert sample(scrape(sim), "vllm:num_requests_running") == 0


def test_hang_fault_never_answers_and_counts_as_waiting(make_sim: MakeSim) -> None:
    sim = make_sim()
    outcome: dict[str, Exception] = {}

    def client() -> None:
        try:
            requests.post(
                sim.url + CHAT, json=chat_body(), headers={FAULT_HEADER: "hang"}, timeout=0.5
            )
        except requests.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()
    wait_for(lambda: sample(scrape(sim), "vllm:num_requests_waiting") == 1)
    thread.join()
    assert isinstance(outcome["error"], requests.exceptions.ReadTimeout)
    record = only_record(sim)
    assert record.status is None and record.headers_write_ns is None and record.client_disconnected
    assert sample(scrape(sim), "vllm:num_requests_waiting") == 0


def test_malformed_fault_sends_one_broken_event(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=6)
    got = stream(sim, chat_body(), fault="malformed")
    broken = []
    for payload in got.data():
        if payload == b"[DONE]":
            continue
        try:
            json.loads(payload)
        except ValueError:
            broken.append(payload)
    assert len(broken) == 1
    assert got.data()[-1] == b"[DONE]"
    good = [json.loads(p) for p in got.data()[:-1] if p not in broken]
    assert sum(1 for c in good if c["choices"][0]["delta"].get("content")) == 6


def test_not_sse_fault_answers_json(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=3)
    resp = requests.post(
        sim.url + CHAT, json=chat_body(), headers={FAULT_HEADER: "not_sse"}, timeout=5
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["object"] == "chat.completion"


def test_oversize_fault_sends_a_line_without_end(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=4, oversize_bytes=300_000)
    got = stream(sim, chat_body(), fault="oversize")
    assert len(got.content_events()) == 2
    assert got.leftover.startswith(b"data: xxx") and len(got.leftover) == 300_000
    assert b"\n" not in got.leftover


def test_oversize_fault_stops_when_the_client_gives_up(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=2, oversize_bytes=1 << 30)
    resp = requests.post(
        sim.url + CHAT, json=chat_body(), headers={FAULT_HEADER: "oversize"}, stream=True, timeout=5
    )
    assert len(resp.raw.read(200_000)) == 200_000
    resp.close()
    assert only_record(sim).client_disconnected


def test_buffered_fault_delivers_the_stream_in_one_write(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=10, itl=0.01)
    got = stream(sim, chat_body(), fault="buffered")
    record = sim.request_log(got.response_id())
    assert record is not None and record.fault == "buffered"
    assert len(set(record.token_write_ns)) == 1 and len(record.token_write_ns) == 10
    assert record.headers_write_ns == record.token_write_ns[0] == record.done_write_ns
    generated = record.token_generated_ns
    assert generated[-1] - generated[0] >= 9 * 0.01e9 * 0.95  # generated spread out...
    assert got.headers_ns >= generated[-1]  # ...but nothing reached the client before the end
    assert len(got.content_events()) == 10 and got.data()[-1] == b"[DONE]"


def test_buffered_setting_applies_to_requests_without_a_fault(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=3, buffered=True)
    got = stream(sim, chat_body())
    record = sim.request_log(got.response_id())
    assert record is not None and record.fault == "buffered"
    assert len(set(record.event_write_ns)) == 1 and got.data()[-1] == b"[DONE]"


def test_keepalive_comments_come_before_the_first_token(make_sim: MakeSim) -> None:
    sim = make_sim(ttft=0.2, keepalive=0.05, tokens=2)
    got = stream(sim, chat_body())
    comments = [e for _, e in got.events if e.startswith(b":")]
    assert comments and all(c == b": keep-alive" for c in comments)
    first_data = next(i for i, (_, e) in enumerate(got.events) if e.startswith(b"data:"))
    assert first_data == len(comments) == 3  # at 50, 100 and 150 ms
    record = sim.request_log(got.response_id())
    assert record is not None and len(record.keepalive_write_ns) == 3
    assert max(record.keepalive_write_ns) < record.event_write_ns[0]


def test_fault_header_none_overrides_the_probabilities(make_sim: MakeSim) -> None:
    sim = make_sim(p_http_500=1.0)
    assert stream(sim, chat_body()).status == 500
    assert stream(sim, chat_body(), fault="none").status == 200


def test_bad_fault_header_is_refused(make_sim: MakeSim) -> None:
    sim = make_sim()
    resp = requests.post(
        sim.url + CHAT, json=chat_body(), headers={FAULT_HEADER: "boom"}, timeout=5
    )
    assert resp.status_code == 400 and "boom" in resp.json()["error"]["message"]
    body = {"messages": [{"role": "user", "content": "hi"}]}  # not streamed
    resp = requests.post(sim.url + CHAT, json=body, headers={FAULT_HEADER: "truncate"}, timeout=5)
    assert resp.status_code == 400 and "stream" in resp.json()["error"]["message"]


def test_fault_draws_follow_the_probabilities_and_the_seed(make_sim: MakeSim) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

    def statuses(sim: Simulator) -> list[int]:
        return [requests.post(sim.url + CHAT, json=body, timeout=5).status_code for _ in range(40)]

    first = statuses(make_sim(seed=3, ttft=0.0, p_http_500=0.5))
    assert set(first) == {200, 500}
    assert 8 <= first.count(500) <= 32
    assert statuses(make_sim(seed=3, ttft=0.0, p_http_500=0.5)) == first


# --- timing stamps -----------------------------------------------------------------------


def test_write_stamps_follow_the_schedule(make_sim: MakeSim) -> None:
    itl = 0.01
    sim = make_sim(ttft=0.05, itl=itl, tokens=20)
    got = stream(sim, chat_body())
    record = sim.request_log(got.response_id())
    assert record is not None and record.complete and not record.client_disconnected
    stamps = record.token_write_ns
    assert len(stamps) == record.tokens_sent == len(got.content_events()) == 20
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert len(record.event_write_ns) == 21 and record.event_write_ns[1:] == stamps
    # A loaded machine wakes the simulator late now and then, never early: each write is
    # at or after its deadline, and the typical gap is the configured one.
    for k, stamp in enumerate(stamps):
        assert stamp >= record.received_ns + round((0.05 + k * itl) * 1e9)
    gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    assert abs(statistics.median(gaps_ms) - itl * 1e3) < 1.0
    assert record.done_write_ns is not None and record.done_write_ns > stamps[-1]
    # The client's arrival stamps, same clock, land right next to the server's writes.
    arrivals = [ns for ns, _ in got.content_events()]
    errors_ms = [abs(a - w) / 1e6 for a, w in zip(arrivals, stamps, strict=True)]
    assert statistics.median(errors_ms) < 2.0


def test_deadlines_are_absolute_so_late_writes_do_not_add_up(
    make_sim: MakeSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sleep is made to overshoot by 1 ms: scheduled from the previous write, the
    overshoots would add up to some 80 ms by the last tokens; from the request's receipt,
    each token is late by one overshoot (plus whatever the machine adds to that write), and
    the 9 ms left of each gap let a late write's successors catch up."""
    overshoot_s = 0.001
    sleep_until = Connection.sleep_until

    def late(conn: Connection, deadline_ns: int) -> None:
        sleep_until(conn, deadline_ns)
        time.sleep(overshoot_s)

    monkeypatch.setattr(Connection, "sleep_until", late)
    ttft, itl, tokens = 0.01, 0.01, 100
    sim = make_sim(ttft=ttft, itl=itl, tokens=tokens)
    got = stream(sim, chat_body())
    record = sim.request_log(got.response_id())
    assert record is not None and len(record.token_generated_ns) == tokens
    due = [record.received_ns + round((ttft + i * itl) * 1e9) for i in range(tokens)]
    lateness_ms = [(w - d) / 1e6 for w, d in zip(record.token_generated_ns, due, strict=True)]
    assert min(lateness_ms) >= 0
    assert statistics.median(lateness_ms[-20:]) < 20 * overshoot_s * 1e3, lateness_ms[-20:]


def test_accepted_sockets_have_nodelay(make_sim: MakeSim) -> None:
    sim = make_sim(ttft=0.3)
    thread = threading.Thread(target=lambda: stream(sim, chat_body()))
    thread.start()
    wait_for(lambda: bool(sim.records()))
    live = list(sim._server._connections.values())
    assert live and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in live)
    thread.join()


def test_jitter_varies_the_delays_within_bounds() -> None:
    ttft, itl, jitter = 0.02, 0.01, 0.5
    deadlines = list(itertools.islice(token_deadlines(0, ttft, itl, jitter, random.Random(11)), 16))
    gaps = [b - a for a, b in itertools.pairwise(deadlines)]
    assert ttft * (1 - jitter) * 1e9 - 1 <= deadlines[0] <= ttft * (1 + jitter) * 1e9 + 1
    assert all(itl * (1 - jitter) * 1e9 - 1 <= gap <= itl * (1 + jitter) * 1e9 + 1 for gap in gaps)
    assert max(gaps) - min(gaps) > itl * jitter * 1e9


def test_jitter_reaches_the_stream(make_sim: MakeSim) -> None:
    # The bounds are checked on the deadlines above: bounds on the real gaps would be a
    # wall-clock threshold (a busy machine writes late). Here: the stream uses the jitter.
    sim = make_sim(ttft=0.01, itl=0.01, tokens=15, jitter=0.5, seed=11)
    got = stream(sim, chat_body())
    record = sim.request_log(got.response_id())
    assert record is not None
    gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(record.token_generated_ns)]
    assert max(gaps_ms) - min(gaps_ms) > 1.0


def test_client_disconnect_is_detected(make_sim: MakeSim) -> None:
    sim = make_sim(ttft=0.005, itl=0.005, tokens=1000)
    before = scrape(sim)
    got = stream(sim, chat_body(), stop_after_events=5)
    record = sim.request_log(got.response_id(), wait=2.0)
    assert record is not None and record.complete
    assert record.client_disconnected and 4 <= record.tokens_sent < 1000
    assert record.done_write_ns is None and record.finish_reason is None
    after = scrape(sim)
    assert sample(after, "vllm:num_requests_running") == 0
    # Like vLLM 0.32: a client abort is counted in no finished_reason, "abort" included.
    for reason in ("stop", "length", "abort", "error", "repetition"):
        name = "vllm:request_success_total"
        assert sample(after, name, finished_reason=reason) == sample(
            before, name, finished_reason=reason
        )
    generated = sample(after, "vllm:generation_tokens_total")
    assert generated - sample(before, "vllm:generation_tokens_total") == record.tokens_sent


def test_request_record_endpoint(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=3)
    got = stream(sim, chat_body())
    resp = requests.get(f"{sim.url}/sim/requests/{got.response_id()}", timeout=5)
    assert resp.status_code == 200
    record = resp.json()
    assert record["response_id"] == got.response_id()
    assert record["tokens_sent"] == 3 and len(record["token_write_ns"]) == 3
    assert record["complete"] is True and record["fault"] == "none"
    assert set(record) == set(RequestRecord.__dataclass_fields__)
    assert requests.get(sim.url + "/sim/requests/chatcmpl-0", timeout=5).status_code == 404


def test_records_are_bounded() -> None:
    from streamobs.simulator.records import RecordStore, RequestTrace

    store = RecordStore(limit=3)
    for n in range(5):
        store.add(
            RequestTrace(
                response_id=f"r{n}",
                endpoint=CHAT,
                model="m",
                fault="none",
                stream=True,
                received_ns=n,
                prompt_tokens=1,
            )
        )
    assert [r.response_id for r in store.all()] == ["r2", "r3", "r4"]
    assert store.get("r0", wait=0) is None


def test_concurrent_streams(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=20, itl=0.003)
    results: list[Received] = []
    threads = [
        threading.Thread(target=lambda: results.append(stream(sim, chat_body()))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(len(r.content_events()) == 20 and r.data()[-1] == b"[DONE]" for r in results)
    assert len({r.response_id() for r in results}) == 8


def test_connection_is_reused_after_a_complete_stream(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=3)
    body = json.dumps(chat_body()).encode()
    request = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        for _ in range(2):  # two streams, one after the other, on one connection
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n0\r\n\r\n"):
                data = sock.recv(65536)
                assert data, "connection closed after a complete stream"
                reply += data
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"data: [DONE]\n\n" in reply
    assert len(sim.records()) == 2


# --- /metrics ----------------------------------------------------------------------------


def captured_families() -> dict[str, Any]:
    text = (FIXTURES / "metrics.txt").read_text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_match_the_captured_names_help_and_buckets(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=2)
    stream(sim, chat_body())
    text = requests.get(sim.url + "/metrics", timeout=5).text
    mine = {family.name: family for family in text_string_to_metric_families(text)}
    theirs = captured_families()
    expected = {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        "vllm:num_preemptions",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    }
    assert expected <= set(mine)
    assert not any(name.startswith(("python_", "process_")) for name in mine)
    for name in expected:
        assert mine[name].documentation == theirs[name].documentation, name
        assert mine[name].type == theirs[name].type, name

        def label_sets(family: Any) -> set[tuple[str, ...]]:
            return {tuple(sorted(s.labels)) for s in family.samples}

        assert label_sets(mine[name]) == label_sets(theirs[name]), name
        if mine[name].type == "histogram":

            def edges(family: Any) -> list[str]:
                return [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]

            assert edges(mine[name]) == edges(theirs[name]), name
    reasons = {s.labels["finished_reason"] for s in mine["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort", "error", "repetition"}
    assert "version=0.0.4" in requests.get(sim.url + "/metrics", timeout=5).headers["content-type"]


def test_metrics_count_what_was_served(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=5, itl=0.003)
    before = scrape(sim)
    prompt_total = 0
    for _ in range(3):
        got = stream(sim, chat_body(max_tokens=4, stream_options={"include_usage": True}))
        prompt_total += got.chunks()[-1]["usage"]["prompt_tokens"]
    stream(sim, chat_body(), fault="error_event")  # 2 of 5 tokens, then the error
    stream(sim, chat_body(), fault="http_500")  # never reaches the engine
    settle(sim)
    after = scrape(sim)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vllm:request_success_total", finished_reason="length") == 3
    assert delta("vllm:request_success_total", finished_reason="error") == 1
    assert delta("vllm:request_success_total", finished_reason="stop") == 0
    assert delta("vllm:generation_tokens_total") == 3 * 4 + 2
    assert delta("vllm:time_to_first_token_seconds_count") == 4
    assert delta("vllm:inter_token_latency_seconds_count") == 3 * 3 + 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 4
    assert delta("vllm:request_queue_time_seconds_count") == 4
    assert delta("vllm:request_generation_tokens_sum") == 3 * 4 + 2
    assert delta("vllm:request_generation_tokens_count") == 4
    assert delta("vllm:prompt_tokens_total") >= prompt_total
    assert delta("vllm:prefix_cache_queries_total") == delta("vllm:prompt_tokens_total")
    assert delta("vllm:prefix_cache_hits_total") == 0
    ttft_sum = delta("vllm:time_to_first_token_seconds_sum")
    assert 4 * 0.005 <= ttft_sum < 4 * 0.005 + 0.05
    assert sample(after, "vllm:num_requests_running") == 0
    assert sample(after, "vllm:kv_cache_usage_perc") == 0


def test_running_and_kv_cache_follow_requests_in_flight(make_sim: MakeSim) -> None:
    sim = make_sim(ttft=0.3, tokens=2)
    thread = threading.Thread(target=lambda: stream(sim, chat_body()))
    thread.start()
    wait_for(lambda: sample(scrape(sim), "vllm:num_requests_running") == 1)
    assert 0 < sample(scrape(sim), "vllm:kv_cache_usage_perc") < 1
    thread.join()
    settle(sim)
    samples = scrape(sim)
    assert sample(samples, "vllm:num_requests_running") == 0
    assert sample(samples, "vllm:kv_cache_usage_perc") == 0


# --- runtime configuration ----------------------------------------------------------------


def test_sim_config_endpoint_changes_new_requests(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=1)
    resp = requests.post(sim.url + "/sim/config", json={"ttft": 0.15}, timeout=5)
    assert resp.status_code == 200
    assert resp.json() == {**SimulatorConfig(**{**FAST, "tokens": 1}).to_dict(), "ttft": 0.15}
    assert requests.get(sim.url + "/sim/config", timeout=5).json()["ttft"] == 0.15
    got = stream(sim, chat_body())
    record = sim.request_log(got.response_id())
    assert record is not None
    assert (record.token_write_ns[0] - record.received_ns) / 1e9 >= 0.15

    for bad, word in [
        ({"ttfb": 1}, "ttfb"),
        ({"ttft": -1}, "ttft"),
        ({"tokens": "many"}, "tokens"),
    ]:
        resp = requests.post(sim.url + "/sim/config", json=bad, timeout=5)
        assert resp.status_code == 400
        assert word in resp.json()["error"]["message"]
    resp = requests.post(sim.url + "/sim/config", data=b"[1]", timeout=5)
    assert resp.status_code == 400
    assert sim.config.ttft == 0.15  # refused updates changed nothing


def test_reconfigure_and_model_rename(make_sim: MakeSim) -> None:
    sim = make_sim()
    config = sim.reconfigure(model="other", tokens=2)
    assert config == sim.config and sim.config.model == "other"
    assert stream(sim, chat_body(model="other")).status == 200
    assert (
        requests.post(sim.url + CHAT, json=chat_body(model="sim-model"), timeout=5).status_code
        == 404
    )
    settle(sim)
    samples = scrape(sim)
    assert (
        sample(samples, "vllm:request_success_total", model_name="other", finished_reason="stop")
        == 1
    )
    with pytest.raises(ValueError, match="unknown setting"):
        sim.reconfigure(speed=3)


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ttft": -0.1}, "ttft must be >= 0"),
        ({"itl": -1}, "itl must be >= 0"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"p_reset": 1.2}, "p_reset must be a probability between 0 and 1"),
        ({"p_stall": -0.1}, "p_stall must be a probability"),
        ({"p_http_500": 0.7, "p_hang": 0.6}, "add up to 1.3"),
        ({"tokens": 0}, "tokens must be >= 1"),
        ({"tokens": 2.5}, "tokens must be an integer"),
        ({"ttft": True}, "ttft must be a number"),
        ({"ttft": float("nan")}, "ttft must be a finite number"),
        ({"buffered": "yes"}, "buffered must be true or false"),
        ({"model": " "}, "model must be a non-empty name"),
    ],
)
def test_config_validation(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**settings)


def test_config_partial_update() -> None:
    config = SimulatorConfig()
    updated = config.with_changes({"ttft": 1, "buffered": True})
    assert updated.ttft == 1.0 and isinstance(updated.ttft, float) and updated.buffered
    assert config.ttft == 0.2  # frozen: the original is untouched
    with pytest.raises(ValueError, match=r"unknown setting.*nope"):
        config.with_changes({"nope": 1})
    with pytest.raises(ValueError, match="itl must be a finite number"):
        config.with_changes({"itl": "fast"})


# --- lifecycle and CLI -------------------------------------------------------------------


def test_stop_is_prompt_idempotent_and_frees_the_port() -> None:
    sim = Simulator(SimulatorConfig(**FAST), port=0).start()
    outcome: list[Received] = []
    thread = threading.Thread(
        target=lambda: outcome.append(stream(sim, chat_body(), fault="stall"))
    )
    thread.start()
    wait_for(lambda: bool(sim.records()))
    started = time.monotonic()
    sim.stop()
    sim.stop()
    assert time.monotonic() - started < 2.0
    thread.join(5)
    assert outcome and outcome[0].error is not None
    assert sim.records()[0].complete
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/health", timeout=1)
    with pytest.raises(RuntimeError):
        sim.start()


def test_context_manager_serves_and_stops() -> None:
    with Simulator(SimulatorConfig(**FAST)) as sim:
        assert sim.url == f"http://127.0.0.1:{sim.port}"
        assert requests.get(sim.url + "/health", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/health", timeout=1)


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=sim_cli.PROG)
    sim_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_has_a_flag_for_every_fault() -> None:
    assert tuple(sim_cli.FAULT_HELP) == FAULTS
    flags = vars(parse_cli())
    assert {f"p_{fault}" for fault in FAULTS} <= set(flags)


def test_cli_flags_win_over_environment() -> None:
    env = {"STREAMOBS_SIM_TTFT": "0.7", "STREAMOBS_SIM_ITL": "0.03", "STREAMOBS_SIM_BUFFERED": "on"}
    settings = sim_cli.resolve_settings(
        vars(parse_cli("--ttft", "0.1", "--p-http-500", "0.2")), env
    )
    assert settings["ttft"] == 0.1 and settings["itl"] == 0.03 and settings["buffered"] is True
    assert settings["p_http_500"] == 0.2 and settings["port"] == 8000
    assert "jitter" not in settings  # left to the config's default
    with pytest.raises(ValueError, match="STREAMOBS_SIM_TOKENS: expected an integer"):
        sim_cli.resolve_settings(vars(parse_cli()), {"STREAMOBS_SIM_TOKENS": "lots"})


def test_cli_bad_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_cli.run(parse_cli("--ttft", "-1")) == 2
    err = capsys.readouterr().err
    assert err == "streamobs simulate: error: ttft must be >= 0 seconds, got -1.0\n"
    assert sim_cli.run(parse_cli("--itl", "fast")) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_cli_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert sim_cli.run(parse_cli("--port", str(port))) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streamobs simulate: error: cannot listen on 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_cli_serves_until_sigterm() -> None:
    code = (
        "import argparse, sys\n"
        "from streamobs.simulator import cli\n"
        "p = argparse.ArgumentParser(prog=cli.PROG)\n"
        "cli.add_arguments(p)\n"
        "sys.exit(cli.run(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "STREAMOBS_SIM_TTFT": "0.001", "STREAMOBS_SIM_MODEL": "env-model"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("streamobs simulate: serving env-model at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        models = requests.get(url + "/v1/models", timeout=5).json()
        assert models["data"][0]["id"] == "env-model"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- Responses and Anthropic Messages ------------------------------------------------------

RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
TYPED_CAPTURES = {RESPONSES: "responses-stream.sse", MESSAGES: "messages-stream.sse"}


def typed_body(path: str, limit: int, **extra: Any) -> dict[str, Any]:
    if path == RESPONSES:
        return {"model": "tiny", "input": "Say something.", "max_output_tokens": limit, **extra}
    messages = [{"role": "user", "content": "Say something."}]
    return {"model": "tiny", "messages": messages, "max_tokens": limit, **extra}


def typed_events(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, payload) of each `event:`/`data:` pair, comments left out."""
    out = []
    for event in raw:
        if event.startswith(b":"):
            continue
        name, data = event.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        out.append((name[len(b"event: ") :].decode(), json.loads(data[len(b"data: ") :])))
    return out


def received_typed(got: Received) -> list[tuple[str, dict[str, Any]]]:
    return typed_events([e for _, e in got.events])


def typed_response_id(got: Received, path: str) -> str:
    first = received_typed(got)[0][1]
    value = first["response"]["id"] if path == RESPONSES else first["message"]["id"]
    assert isinstance(value, str)
    return value


def captured_typed(path: str) -> list[tuple[str, dict[str, Any]]]:
    raw = (FIXTURES / TYPED_CAPTURES[path]).read_bytes()
    return typed_events([e for e in raw.split(b"\n\n") if e])


@pytest.mark.parametrize(("path", "tokens"), [(RESPONSES, 9), (MESSAGES, 12)])
def test_typed_stream_has_the_captured_events_and_shapes(
    make_sim: MakeSim, path: str, tokens: int
) -> None:
    # As many tokens as the capture has deltas (the simulator's tokens are whole words,
    # so each makes one delta), stopped by the limit as the captured request was.
    sim = make_sim(model="tiny", tokens=100)
    got = stream(sim, typed_body(path, tokens, stream=True, ignore_eos=True), path=path)
    assert got.status == 200 and got.error is None and got.leftover == b""
    assert got.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert got.headers["transfer-encoding"] == "chunked"
    mine, theirs = received_typed(got), captured_typed(path)
    assert [name for name, _ in mine] == [name for name, _ in theirs]
    for (name, ours), (_, real) in zip(mine, theirs, strict=True):
        assert name == ours["type"]
        assert shape(ours) == shape(real), name
    assert b"[DONE]" not in b"".join(e for _, e in got.events)
    record = sim.request_log(typed_response_id(got, path))
    assert record is not None and record.endpoint == path and len(record.token_write_ns) == tokens


def test_responses_stream_carries_usage_and_the_limit_in_completed(make_sim: MakeSim) -> None:
    sim = make_sim(model="tiny", tokens=100)
    got = stream(sim, typed_body(RESPONSES, 5, stream=True), path=RESPONSES)
    events = received_typed(got)
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    name, completed = events[-1]
    response = completed["response"]
    assert name == "response.completed" and response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == 5 and response["usage"]["input_tokens"] > 0
    text = "".join(e["delta"] for n, e in events if n == "response.output_text.delta")
    assert response["output"][0]["content"][0]["text"] == text and text.strip()
    assert events[0][1]["response"]["id"].startswith("resp_")
    # A response that stopped by itself is completed.
    done = received_typed(stream(sim, typed_body(RESPONSES, 500, stream=True), path=RESPONSES))
    assert done[-1][1]["response"]["status"] == "completed"
    assert done[-1][1]["response"]["incomplete_details"] is None


def test_messages_stream_carries_stop_reason_and_usage(make_sim: MakeSim) -> None:
    sim = make_sim(model="tiny", tokens=4)
    events = received_typed(stream(sim, typed_body(MESSAGES, 50, stream=True), path=MESSAGES))
    start, delta = events[0][1], events[-2][1]
    assert start["message"]["id"].startswith("chatcmpl-")
    assert start["message"]["usage"]["output_tokens"] == 0
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {
        "input_tokens": start["message"]["usage"]["input_tokens"],
        "output_tokens": 4,
    }
    capped = received_typed(stream(sim, typed_body(MESSAGES, 2, stream=True), path=MESSAGES))
    assert capped[-2][1]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("path", [RESPONSES, MESSAGES])
def test_typed_errors_are_byte_identical_to_the_captures(make_sim: MakeSim, path: str) -> None:
    sim = make_sim(model="tiny", max_model_len=1024)
    name = TYPED_CAPTURES[path].removesuffix("-stream.sse")
    bad_model = requests.post(
        sim.url + path, json={**typed_body(path, 4), "model": "nope"}, timeout=5
    )
    assert bad_model.status_code == 404
    assert bad_model.content == (FIXTURES / f"{name}-bad-model.body").read_bytes()
    too_long = requests.post(sim.url + path, json=typed_body(path, 5000), timeout=5)
    assert too_long.status_code == 400
    assert too_long.content == (FIXTURES / f"{name}-too-long.body").read_bytes()
    assert too_long.headers["content-type"] == "application/json"


def test_messages_requires_max_tokens(make_sim: MakeSim) -> None:
    sim = make_sim(model="tiny")
    body = typed_body(MESSAGES, 4)
    del body["max_tokens"]
    resp = requests.post(sim.url + MESSAGES, json=body, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize("path", [RESPONSES, MESSAGES])
@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_429", 429)])
def test_typed_http_faults_use_the_protocols_error_shape(
    make_sim: MakeSim, path: str, fault: str, status: int
) -> None:
    sim = make_sim(model="tiny")
    got = stream(sim, typed_body(path, 4, stream=True), path=path, fault=fault)
    assert got.status == status
    body = json.loads(got.leftover)
    if path == MESSAGES:
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    else:
        assert body["error"]["code"] == status
    assert "injected by the simulator" in got.leftover.decode()


@pytest.mark.parametrize("path", [RESPONSES, MESSAGES])
def test_typed_error_event_fault_ends_the_stream_with_an_error_event(
    make_sim: MakeSim, path: str
) -> None:
    sim = make_sim(model="tiny", tokens=100)
    got = stream(sim, typed_body(path, 6, stream=True), path=path, fault="error_event")
    assert got.error is None
    events = received_typed(got)
    name, error = events[-1]
    assert name == "error" and error["type"] == "error"
    assert "EngineCore encountered an issue" in json.dumps(error)
    deltas = [n for n, _ in events if n.endswith(".delta") or n == "content_block_delta"]
    assert len(deltas) == 3
    record = sim.request_log(typed_response_id(got, path))
    assert record is not None and record.done_write_ns is None and record.finish_reason is None


@pytest.mark.parametrize("path", [RESPONSES, MESSAGES])
def test_typed_stall_truncate_and_malformed_faults(make_sim: MakeSim, path: str) -> None:
    sim = make_sim(model="tiny", tokens=100)
    stalled = stream(sim, typed_body(path, 6, stream=True), path=path, fault="stall", timeout=0.3)
    assert stalled.error is not None
    opening = {RESPONSES: ["response.created", "response.in_progress"], MESSAGES: ["message_start"]}
    assert [n for n, _ in received_typed(stalled)] == opening[path]
    cut = stream(sim, typed_body(path, 6, stream=True), path=path, fault="truncate")
    names = [n for n, _ in received_typed(cut)]
    assert cut.error is None and names[-1] in ("response.output_text.delta", "content_block_delta")
    broken = stream(sim, typed_body(path, 6, stream=True), path=path, fault="malformed")
    bad = []
    for _, event in broken.events:
        try:
            typed_events([event])
        except ValueError:
            bad.append(event)
    assert len(bad) == 1 and bad[0].startswith(b"event: ")


@pytest.mark.parametrize("path", [RESPONSES, MESSAGES])
def test_typed_not_sse_and_non_streamed_bodies(make_sim: MakeSim, path: str) -> None:
    sim = make_sim(model="tiny", tokens=3)
    for headers in ({}, {FAULT_HEADER: "not_sse"}):
        body = typed_body(path, 10, stream=headers != {})
        resp = requests.post(sim.url + path, json=body, headers=headers, timeout=5)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        reply = resp.json()
        if path == RESPONSES:
            assert reply["object"] == "response" and reply["usage"]["output_tokens"] == 3
            assert reply["output"][0]["content"][0]["text"].strip()
        else:
            assert reply["type"] == "message" and reply["usage"]["output_tokens"] == 3
            assert reply["content"][0]["type"] == "text" and reply["stop_reason"] == "end_turn"


def test_chat_reasoning_and_tool_call_deltas(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=6, reasoning_tokens=2)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    choice = {"type": "function", "function": {"name": "f"}}
    got = stream(sim, chat_body(tools=tools, tool_choice=choice))
    deltas = [c["choices"][0]["delta"] for c in got.chunks()[1:]]
    assert [d.get("reasoning") for d in deltas[:2]] == [" the", " stream"]
    first, *rest = (d["tool_calls"][0] for d in deltas[2:])
    assert first["function"]["name"] == "f" and first["id"].startswith("chatcmpl-tool-")
    assert all("name" not in call["function"] for call in rest)
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:])
    assert json.loads(arguments) == {"numbers": " of tokens flows from"}
    older = make_sim(tokens=3, reasoning_tokens=1, reasoning_field="reasoning_content")
    (delta, *_) = [c["choices"][0]["delta"] for c in stream(older, chat_body()).chunks()[1:]]
    assert delta == {"reasoning_content": " the"}


def test_responses_reasoning_then_function_call_items(make_sim: MakeSim) -> None:
    sim = make_sim(model="tiny", tokens=5, reasoning_tokens=2)
    tools = [{"type": "function", "name": "f", "parameters": {}}]
    body = typed_body(
        RESPONSES, 50, stream=True, tools=tools, tool_choice={"type": "function", "name": "f"}
    )
    events = received_typed(stream(sim, body, path=RESPONSES))
    names = [n for n, _ in events]
    assert names.count("response.reasoning_text.delta") == 2
    assert names.count("response.function_call_arguments.delta") == 3
    assert names.index("response.reasoning_text.done") < names.index(
        "response.function_call_arguments.delta"
    )
    output = events[-1][1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "function_call"]
    assert output[1]["name"] == "f" and json.loads(output[1]["arguments"]) == {
        "numbers": " of tokens flows"
    }
    assert events[-1][1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


def test_messages_thinking_then_tool_use_blocks(make_sim: MakeSim) -> None:
    sim = make_sim(model="tiny", tokens=5, reasoning_tokens=2)
    tools = [{"name": "f", "input_schema": {}}]
    body = typed_body(
        MESSAGES, 50, stream=True, tools=tools, tool_choice={"type": "tool", "name": "f"}
    )
    events = received_typed(stream(sim, body, path=MESSAGES))
    blocks = [e["content_block"]["type"] for n, e in events if n == "content_block_start"]
    assert blocks == ["thinking", "tool_use"]
    deltas = [e["delta"]["type"] for n, e in events if n == "content_block_delta"]
    assert deltas == ["thinking_delta"] * 2 + ["input_json_delta"] * 3
    assert [e["index"] for n, e in events if n == "content_block_stop"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tokens_held_in_a_utf8_character_ride_on_the_next_delta(make_sim: MakeSim) -> None:
    # Every second token held, as in the captured Responses stream: 16 tokens, 9 deltas.
    sim = make_sim(model="tiny", tokens=100, partial_utf8_every=2)
    got = stream(sim, typed_body(RESPONSES, 16, stream=True, ignore_eos=True), path=RESPONSES)
    mine, theirs = received_typed(got), captured_typed(RESPONSES)
    assert [name for name, _ in mine] == [name for name, _ in theirs]
    deltas = [e["delta"] for n, e in mine if n == "response.output_text.delta"]
    assert len(deltas) == 9 and deltas[:2] == [" the", " stream of"]
    assert "".join(deltas) == "".join(token_text(i) for i in range(16))
    assert mine[-1][1]["response"]["usage"]["output_tokens"] == 16
    record = sim.request_log(typed_response_id(got, RESPONSES))
    assert record is not None
    assert len(record.token_write_ns) == 9 and len(record.token_generated_ns) == 16
    # Chat sends the held token as an empty-content chunk, as vLLM does.
    chat = stream(sim, chat_body(model="tiny", max_tokens=4, ignore_eos=True))
    contents = [c["choices"][0]["delta"]["content"] for c in chat.chunks()[1:]]
    assert contents == [" the", "", " stream of", " tokens"]
    assert len(chat.content_events()) == 3


def test_non_streamed_chat_carries_reasoning_and_the_tool_call(make_sim: MakeSim) -> None:
    sim = make_sim(tokens=4, reasoning_tokens=1)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = chat_body(stream=False, tools=tools, tool_choice="required")
    message = requests.post(sim.url + CHAT, json=body, timeout=5).json()["choices"][0]["message"]
    assert message["content"] is None and message["reasoning_content"] == " the"
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "f"
    assert json.loads(call["function"]["arguments"]) == {"numbers": " stream of tokens"}


# -- llm_request spans, queue time, disconnects ignored ------------------------------------
def test_spans_go_out_in_batches_over_grpc_with_each_requests_own_figures() -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from tests.otlp_receiver import grpc_receiver

    with grpc_receiver() as (endpoint, received):
        config = SimulatorConfig(
            model="sim",
            ttft=0.02,
            itl=0.002,
            queue=0.01,
            otlp_traces_endpoint=endpoint,
            otlp_traces_protocol="grpc",
            otlp_traces_batch_delay=3600.0,  # only a full batch or a flush sends
        )
        with Simulator(config) as sim:
            parents = []
            for n in range(3):
                parent = f"{n + 1:016x}"
                parents.append(parent)
                headers = {
                    "traceparent": f"00-{'ab' * 16}-{parent}-01",
                    "X-Request-Id": f"req-{n}",
                }
                body = {"model": "sim", "prompt": "x", "max_tokens": 4, "stream": True}
                reply = requests.post(
                    sim.url + "/v1/completions", json=body, headers=headers, timeout=10
                )
                assert reply.ok and '"id":"cmpl-req-' in reply.text
            # A request's span is queued as its serving ends, just after the client has
            # read [DONE]: wait for all three before asking for the batch.
            for n in range(3):
                assert sim.request_log(f"cmpl-req-{n}", wait=10) is not None
            assert not received.traces  # batched: nothing before the batch is due
            sim.flush_spans()
            assert received.wait_for(lambda: bool(received.traces), timeout=20)
            records = {r.request_id: r for r in sim.records()}
        (request,) = received.traces  # one export request carrying the three spans
        (resource,) = request.resource_spans
        spans = list(resource.scope_spans[0].spans)
        assert [s.parent_span_id.hex() for s in spans] == parents
        for n, span in enumerate(spans):
            assert span.name == "llm_request" and span.kind == Span.SPAN_KIND_SERVER
            attributes = {a.key: a.value for a in span.attributes}
            record = records[f"req-{n}"]
            assert record.span_attributes is not None
            assert attributes["gen_ai.request.id"].string_value == f"cmpl-req-{n}"
            assert attributes["gen_ai.usage.completion_tokens"].int_value == 4
            queue = attributes["gen_ai.latency.time_in_queue"].double_value
            assert queue == record.span_attributes["gen_ai.latency.time_in_queue"]
            assert record.admitted_ns is not None
            assert queue == (record.admitted_ns - record.received_ns) / 1e9 >= 0.01
            ttft = attributes["gen_ai.latency.time_to_first_token"].double_value
            assert ttft == (record.token_generated_ns[0] - record.received_ns) / 1e9
            prefill = attributes["gen_ai.latency.time_in_model_prefill"].double_value
            assert prefill == (record.token_generated_ns[0] - record.admitted_ns) / 1e9


def test_a_server_that_ignores_disconnects_generates_for_nobody() -> None:
    config = SimulatorConfig(model="sim", ttft=0.01, itl=0.005, ignore_disconnect=True)
    with Simulator(config) as sim:
        body = {"model": "sim", "prompt": "x", "max_tokens": 60, "stream": True}
        with requests.post(sim.url + "/v1/completions", json=body, stream=True, timeout=10) as r:
            next(r.iter_content(chunk_size=None))
        deadline = time.monotonic() + 30
        while True:
            (record,) = sim.records()
            if record.complete:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert record.client_disconnected
        assert record.tokens_generated == 60 > record.tokens_sent
        metrics = requests.get(sim.url + "/metrics", timeout=10).text
        assert 'vllm:generation_tokens_total{engine="0",model_name="sim"} 60.0' in metrics


def test_new_knobs_are_validated() -> None:
    for bad in ({"queue": -1.0}, {"metrics_delay": -0.1}, {"otlp_traces_protocol": "udp"}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)  # type: ignore[arg-type]
