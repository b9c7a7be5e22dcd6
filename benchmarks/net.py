"""Loopback helpers for benchmarks (kept apart from the tests' own: the two stay independent)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers started as subprocesses)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
