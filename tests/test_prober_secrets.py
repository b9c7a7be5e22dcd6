"""A server that echoes every request header back in its error text: the probe's result
shows neither the API key nor a secret header's value, nor any prefix of them."""

from __future__ import annotations

import json
import socket

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.secret import Secret
from tests.scripted_server import SSE_HEADERS, ScriptedServer, chunk, read_request

KEY = "sk-live-0123456789abcdefSECRET"
HEADER_SECRET = "azure-9876543210fedcbaHIDDEN"


def echo_as_status(conn: socket.socket) -> None:
    request = read_request(conn).decode("latin-1")
    body = json.dumps({"error": {"message": "denied; you sent " + request * 3}}).encode()
    conn.sendall(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


def echo_as_stream_error(conn: socket.socket) -> None:
    request = read_request(conn).decode("latin-1")
    event = json.dumps({"error": {"message": "engine failed for " + request}}).encode()
    conn.sendall(SSE_HEADERS + chunk(b"data: " + event + b"\n\n") + b"0\r\n\r\n")


@pytest.mark.parametrize(
    "script,outcome",
    [(echo_as_status, Outcome.HTTP_STATUS), (echo_as_stream_error, Outcome.STREAM_ERROR)],
)
def test_echoed_credentials_never_reach_the_result(script: object, outcome: Outcome) -> None:
    with ScriptedServer(script, read_request=False) as server:  # type: ignore[arg-type]
        spec = ProbeSpec(
            target=parse_target(server.url),
            model="m",
            api_key=Secret(KEY),
            headers={"api-key": HEADER_SECRET},
            timeouts=Timeouts(connect=2, headers=2, first_token=3, total=4),
        )
        result = run_probe(spec)
    assert result.outcome is outcome
    shown = json.dumps(result.to_dict()) + repr(result)
    for secret in (KEY, HEADER_SECRET):
        for size in range(6, len(secret) + 1):
            assert secret[:size] not in shown, f"a {size}-character prefix survived"
