"""TLS: a certificate the probe cannot verify is the `tls` class; --insecure accepts it."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from streamobs.probe import Degraded, Outcome, ProbeSpec, Timeouts, parse_target, run_probe
from tests.fixtures import require_binary
from tests.scripted_server import ScriptedServer, silent, stream_fixture

TIMEOUTS = Timeouts(connect=1, headers=2, first_token=2, total=4)


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = require_binary("openssl")
    folder: Path = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class TLSScriptedServer(ScriptedServer):
    def __init__(self, context: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.context = context

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://")

    def _handle(self, conn: socket.socket) -> None:
        try:
            wrapped = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        super()._handle(wrapped)


def test_self_signed_certificate_is_tls(server_tls: ssl.SSLContext) -> None:
    with TLSScriptedServer(server_tls, stream_fixture("chat-stream-usage.sse")) as server:
        spec = ProbeSpec(target=parse_target(server.url), model="tiny", timeouts=TIMEOUTS)
        result = run_probe(spec)
    assert result.outcome is Outcome.TLS
    assert result.error is not None and "CERTIFICATE_VERIFY_FAILED" in result.error.upper()


def test_insecure_accepts_it_and_streams(server_tls: ssl.SSLContext) -> None:
    with TLSScriptedServer(server_tls, stream_fixture("chat-stream-usage.sse")) as server:
        spec = ProbeSpec(
            target=parse_target(server.url), model="tiny", timeouts=TIMEOUTS, verify_tls=False
        )
        result = run_probe(spec)
    assert result.outcome is Outcome.OK, result.error
    assert result.connect_ns is not None and result.tls_ns is not None
    assert result.headers_ns is not None and result.tls_version is not None
    if sys.platform == "linux":  # TLS runs over the raw socket: the kernel stamps it too
        assert result.timing.sent_by_kernel
        assert result.timing.degraded is not Degraded.NO_KERNEL_STAMPS


def test_tls_handshake_that_never_completes_is_tls() -> None:
    # A TCP server that accepts and never speaks: the handshake stalls.
    with ScriptedServer(silent, read_request=False) as server:
        spec = ProbeSpec(
            target=parse_target(server.url.replace("http://", "https://")),
            model="tiny",
            timeouts=TIMEOUTS,
        )
        result = run_probe(spec)
    assert result.outcome is Outcome.TLS
