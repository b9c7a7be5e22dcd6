"""How long the calling thread has waited for a CPU: ``/proc/thread-self/schedstat``.

Its second field is the time the thread spent runnable but not running (on a run queue),
in nanoseconds. A probe thread blocked in a read becomes runnable when its bytes arrive;
the run-queue wait accrued across that read bounds how long the bytes sat in the socket
before the read took them. A thread waiting for the interpreter lock is asleep, not
runnable: that wait is not in this figure (and is not needed: it happens after the kernel
has handed the bytes over).
"""

from __future__ import annotations

import contextlib
import os


class RunQueueClock:
    """Reads the opening thread's run-queue wait; use it from that thread only."""

    __slots__ = ("_fd",)

    def __init__(self) -> None:
        self._fd: int | None
        try:
            # /proc/thread-self resolves at open: the descriptor stays this thread's.
            self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        return self._fd is not None

    def wait_ns(self) -> int | None:
        """The thread's total run-queue wait so far, or None where the kernel says nothing."""
        if self._fd is None:
            return None
        try:
            fields = os.pread(self._fd, 128, 0).split()
            return int(fields[1])
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
