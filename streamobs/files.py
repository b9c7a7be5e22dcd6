"""Reading a file the user named, within a size limit, without ever blocking on it.

A config or key path may point at anything: ``/dev/zero`` (endless), a FIFO (``open()``
waits for a writer forever), a directory, a 50 MB file put there by mistake. The file is
opened non-blocking, must be a regular file, and is refused by its size before any byte
is read, so every such case ends at once with one clear message.
"""

from __future__ import annotations

import os
import stat

KIB, MIB = 1024, 1024 * 1024


class FileRefused(ValueError):
    """Not readable as a small regular file; the message names the path and the reason."""


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit // KIB} KiB"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_limited(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path`` (at most ``limit``); ``what`` names it in errors ("API key
    file", "config file")."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(f"cannot read {what} {name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{what} {name} is {_kind(info.st_mode)}; expected a regular file")
        if info.st_size > limit:
            raise FileRefused(f"{what} {name} is larger than {_size(limit)}")
        chunks, total = [], 0
        while total <= limit:  # the file may grow after fstat: never read past the limit
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise FileRefused(f"cannot read {what} {name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise FileRefused(f"{what} {name} is larger than {_size(limit)}")
    return b"".join(chunks)
