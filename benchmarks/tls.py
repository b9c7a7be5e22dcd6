"""The simulator behind TLS, stamped from the kernel as it is on plain TCP.

The timing benchmark needs the server's account of each request through TLS as well:
receipt of the request's last byte (kernel receive stamp) and the write of each event
(kernel transmit stamp). ``ssl.SSLSocket`` reads and writes the descriptor inside OpenSSL,
where no receive stamp can be had, so this runs TLS over the simulator's own stamping
socket in memory (``ssl.MemoryBIO``/``SSLObject``), as streamobs' client does: the socket
read that carried a record and the socket send of each record are the ones stamped.

Run as its own process (``python -m benchmarks.tls --cert C --key K ...``), so the
simulator shares neither the benchmark's interpreter lock nor its patched hooks. The
certificate is self-signed for 127.0.0.1 and made at run time with ``openssl``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamobs.simulator import kernel_stamps
from streamobs.simulator.config import SimulatorConfig
from streamobs.simulator.server import Simulator

_RAW_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Certificate:
    cert: Path  # also the CA the clients trust: it is self-signed
    key: Path


@contextlib.contextmanager
def self_signed() -> Iterator[Certificate]:
    """An ECDSA P-256 certificate for 127.0.0.1 (what certbot issues by default), valid
    for a day, in a temporary folder removed afterwards."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS rows need the openssl command (Debian package openssl)")
    with tempfile.TemporaryDirectory(prefix="streamobs-bench-tls-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
             "-addext", "extendedKeyUsage=serverAuth", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        yield Certificate(cert, key)


def client_context(certificate: Certificate) -> ssl.SSLContext:
    """What a client that trusts this certificate uses (hostname checked against the IP)."""
    return ssl.create_default_context(cafile=str(certificate.cert))


class _Reader(io.RawIOBase):
    def __init__(self, conn: TLSConnection) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._conn.recv_into(buffer)


class TLSConnection:
    """An accepted (stamping) socket with TLS run over it in memory: the part of the socket
    interface the simulator's request handler and its ``Connection`` use.

    The handshake happens on the connection's own thread at its first read, not on the
    accepting thread. Peeks (the simulator's "has the client gone" check) look at the raw
    socket: a FIN there is the client gone, whatever TLS says.
    """

    def __init__(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        self.raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshaken = False
        self._buffer = bytearray(_RAW_READ_BYTES)

    # -- TLS over the raw socket --------------------------------------------------------

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.raw.sendall(data)

    def _fill(self) -> bool:
        """One raw read into TLS (the stamping socket notes its receive stamp); False at EOF."""
        size = self.raw.recv_into(self._buffer)
        if not size:
            self._incoming.write_eof()
            return False
        self._incoming.write(memoryview(self._buffer)[:size])
        return True

    def _handshake(self) -> None:
        while not self._handshaken:
            try:
                self._tls.do_handshake()
                self._handshaken = True
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionAbortedError("client closed during the handshake") from None
        self._flush()

    # -- what the handler and Connection call -------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if flags:
            raise ValueError("flags are not supported through TLS")
        self._handshake()
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        while True:
            try:
                size = self._tls.read(len(view), view)
                self._flush()
                return int(size)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    return 0
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:
            return self.raw.recv(bufsize, flags)
        buffer = bytearray(bufsize)
        size = self.recv_into(buffer, bufsize, flags)
        return bytes(buffer[:size])

    def sendall(self, data: Any) -> None:
        """One TLS record per call (the simulator writes one event per call), then one
        socket send, so the send's transmit stamp is that of the record."""
        self._handshake()
        self._tls.write(data)
        self._flush()

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(memoryview(data))

    def makefile(self, mode: str = "rb", buffering: int = -1, **_: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError("only mode 'rb' is supported through TLS")
        size = buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
        return io.BufferedReader(_Reader(self), size)

    def shutdown(self, how: int) -> None:
        if self._handshaken and how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with contextlib.suppress(ssl.SSLError, OSError):
                self._tls.unwrap()  # our close_notify; the client's we do not wait for
            with contextlib.suppress(OSError):
                self._flush()
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def detach(self) -> int:
        return self.raw.detach()

    def fileno(self) -> int:
        return self.raw.fileno()

    def settimeout(self, value: float | None) -> None:
        self.raw.settimeout(value)

    def setsockopt(self, *args: Any) -> None:
        self.raw.setsockopt(*args)

    def getpeername(self) -> Any:
        return self.raw.getpeername()


def _see_through(
    last_send_ns: Callable[[socket.socket], int | None],
) -> Callable[[Any], int | None]:
    def tls_aware(sock: Any) -> int | None:
        return last_send_ns(sock.raw if isinstance(sock, TLSConnection) else sock)

    return tls_aware


def serve(config: SimulatorConfig, port: int, certificate: Certificate) -> Simulator:
    """The simulator on 127.0.0.1:port serving TLS. Patches this process's simulator
    hooks: call it only in a process of its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    context.set_alpn_protocols(["http/1.1"])
    # The transmit stamp of a write is read from the raw socket under the TLS.
    kernel_stamps.last_send_ns = _see_through(kernel_stamps.last_send_ns)  # type: ignore[assignment]
    simulator = Simulator(config, port=port)
    server = simulator._server
    accept = server.get_request

    def get_request() -> tuple[Any, Any]:
        sock, address = accept()  # TCP_NODELAY and kernel stamps on, as on plain TCP
        return TLSConnection(sock, context), address

    server.get_request = get_request  # type: ignore[method-assign]
    return simulator.start()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--ttft", type=float, default=0.05)
    parser.add_argument("--itl", type=float, default=0.02)
    args = parser.parse_args()
    config = SimulatorConfig(model=args.model, ttft=args.ttft, itl=args.itl, jitter=0.0)
    simulator = serve(config, args.port, Certificate(args.cert, args.key))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"serving TLS at https://127.0.0.1:{simulator.port}", flush=True)
    stop.wait()
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
