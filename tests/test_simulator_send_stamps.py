"""The simulator waits for its own writes' transmit stamps only where one can come."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from streamobs.simulator import kernel_stamps

_real_poll = select.poll


class _CountingPoll:
    """select.poll that counts how often it is asked."""

    calls = 0

    def __init__(self) -> None:
        self._poll = _real_poll()

    def register(self, fd: Any, mask: int) -> None:
        self._poll.register(fd, mask)

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        type(self).calls += 1
        return self._poll.poll(timeout)


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> type[_CountingPoll]:
    """select.poll counted from zero for this test."""
    monkeypatch.setattr(select, "poll", _CountingPoll)
    _CountingPoll.calls = 0
    return _CountingPoll


@contextmanager
def _connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the simulator's stamped accepted socket, a client that never reads)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        kernel_stamps.enable(accepted)
        assert type(accepted) is not socket.socket  # stamped (Linux: the project's platform)
        try:
            yield accepted, client
        finally:
            accepted.close()
            client.close()


def _fill_the_window(sock: socket.socket) -> None:
    """Send until the send buffer is full: the last sends sit behind a closed window."""
    sock.setblocking(False)
    while True:
        try:
            sock.send(b"x" * 1024)
        except BlockingIOError:
            break
    sock.setblocking(True)


def test_a_write_that_left_at_once_gets_its_transmit_stamp() -> None:
    with _connection() as (accepted, _client):
        accepted.sendall(b"data: token\n\n")
        assert kernel_stamps.last_send_ns(accepted) is not None


def test_a_socket_whose_stamp_did_not_come_is_not_waited_on_again(
    polls: type[_CountingPoll],
) -> None:
    with _connection() as (accepted, _client):
        _fill_the_window(accepted)
        assert kernel_stamps.last_send_ns(accepted) is None  # waited, gave up
        waited = polls.calls
        assert waited >= 1
        assert kernel_stamps.last_send_ns(accepted) is None
        assert polls.calls == waited  # no second wait on the same socket


def test_a_reset_ends_the_wait_instead_of_spinning_on_poll(polls: type[_CountingPoll]) -> None:
    with _connection() as (accepted, client):
        _fill_the_window(accepted)
        # Closing with unread data resets the connection: poll reports the socket's error
        # (and hang-up) at once on every call, with no stamp ever queued.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        select.select([accepted], [], [], 5)
        assert kernel_stamps.last_send_ns(accepted) is None
        assert polls.calls <= 2  # a spin would ask thousands of times in 5 ms
