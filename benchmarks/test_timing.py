"""A smoke run of the timing benchmark: every transport and load, the table rendered.

No timing thresholds here (those are the benchmark's goals, reported in the README): only
that each cell measured what it says, with nothing lost, and that TLS ran stamped at both
ends as plain TCP does.
"""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import timing, tls
from streamobs.probe import ProbeSpec, Timeouts, parse_target, run_probe

STREAMS = 4


def _clients() -> tuple[str, ...]:
    # The SDK and aiohttp come with `make bench` (the bench extra) only.
    present = [importlib.util.find_spec(name) is not None for name in ("openai", "aiohttp")]
    return ("streamobs", "openai-sdk", "aiohttp") if all(present) else ("streamobs",)


def test_every_cell_is_measured() -> None:
    clients = _clients()
    results = timing.run_fidelity((STREAMS,), rounds=1, clients=clients)
    cells = {(r.client, r.transport, r.contention) for r in results}
    assert cells == {
        (c, t, busy) for c in clients for t in ("tcp", "tls") for busy in (False, True)
    }
    for r in results:
        assert r.lost == 0, r
        # 16 // STREAMS rounds of STREAMS streams
        assert r.samples + r.degraded + r.unreferenced == 16, r
        assert r.other_cores >= 0, r
    text = timing.timing_table(results)
    assert text.count("\n| streamobs | tls |") == 2
    assert "Goals (DESIGN.md, streamobs)" in text


def test_tls_simulator_stamps_both_ends() -> None:
    with tls.self_signed() as certificate, timing.simulator_server(certificate) as server:
        spec = ProbeSpec(
            target=parse_target(server.url),
            model=timing.MODEL,
            max_tokens=8,
            timeouts=Timeouts(total=30),
            verify_tls=False,
        )
        result = run_probe(spec)
        assert result.ok, result.error
        assert result.tls_ns is not None and result.timing.sent_by_kernel
        assert result.response_id
        record = timing.server_record(server, result.response_id)
    writes = record["token_write_ns"]
    assert isinstance(writes, list) and len(writes) == len(result.token_arrivals_ns)
    # The server's account counts from the request's receipt to its first token's write.
    assert isinstance(record["received_ns"], int) and writes[0] > record["received_ns"]


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__]))
