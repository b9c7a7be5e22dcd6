"""A server that echoes every request header back in its error text: the probe's result
shows neither the API key, the basic-auth password or its token, nor a secret header's
value, nor any prefix of them."""

from __future__ import annotations

import base64
import json
import socket

import pytest

from streamobs.probe import Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from streamobs.secret import BasicAuth, Secret
from tests.scripted_server import SSE_HEADERS, ScriptedServer, chunk, read_request

KEY = "sk-live-0123456789abcdefSECRET"
HEADER_SECRET = "azure-9876543210fedcbaHIDDEN"
PASSWORD = "basic-pw-0123456789abcdefHIDDEN"
BASIC_TOKEN = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()


def decoded_basic(request: str) -> str:
    """What a careless gateway logs of basic auth: the user and password, decoded."""
    for line in request.split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "authorization" and value.strip().startswith("Basic "):
            return " decoded: " + base64.b64decode(value.strip()[6:]).decode()
    return ""


def echo_as_status(conn: socket.socket) -> None:
    request = read_request(conn).decode("latin-1")
    message = "denied" + decoded_basic(request) + "; you sent " + request * 3
    body = json.dumps({"error": {"message": message}}).encode()
    conn.sendall(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )


def echo_as_stream_error(conn: socket.socket) -> None:
    request = read_request(conn).decode("latin-1")
    event = json.dumps({"error": {"message": "engine failed for " + request}}).encode()
    conn.sendall(SSE_HEADERS + chunk(b"data: " + event + b"\n\n") + b"0\r\n\r\n")


@pytest.mark.parametrize("credential", ["api_key", "basic_auth"])
@pytest.mark.parametrize(
    "script,outcome",
    [(echo_as_status, Outcome.HTTP_STATUS), (echo_as_stream_error, Outcome.STREAM_ERROR)],
)
def test_echoed_credentials_never_reach_the_result(
    script: object, outcome: Outcome, credential: str
) -> None:
    with ScriptedServer(script, read_request=False) as server:  # type: ignore[arg-type]
        spec = ProbeSpec(
            target=parse_target(server.url),
            model="m",
            api_key=Secret(KEY) if credential == "api_key" else None,
            basic_auth=BasicAuth("probe", Secret(PASSWORD)) if credential == "basic_auth" else None,
            headers={"api-key": HEADER_SECRET},
            timeouts=Timeouts(connect=2, headers=2, first_token=3, total=4),
        )
        result = run_probe(spec)
    assert result.outcome is outcome
    shown = json.dumps(result.to_dict()) + repr(result)
    sent = (KEY,) if credential == "api_key" else (PASSWORD, BASIC_TOKEN)
    for secret in (*sent, HEADER_SECRET):
        for size in range(6, len(secret) + 1):
            assert secret[:size] not in shown, f"a {size}-character prefix survived"
