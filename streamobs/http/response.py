"""An HTTP/1.1 response read off a stamped channel: head, framing and content coding,
each bounded, every wait bounded by a deadline.

Interim 1xx responses are skipped (``100 Continue``, ``103 Early Hints``); anything that is
not an HTTP/1.x status line is ``malformed``. The body comes out as it arrives, decoded,
each piece with the stamp of the socket read that carried it; decompression is bounded per
call, so a bomb costs at most ``limit`` bytes at a time.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Iterator

from streamobs.http.channel import Channel, ReadStamp
from streamobs.http.errors import Deadline, HTTPFailure, Kind, Phase

MAX_STATUS_LINE = 8 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_INTERIM = 32
_MAX_CHUNK_LINE = 4 * 1024
_READ_BYTES = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-9][0-9]{2})(?: ([^\r\n]*))?\r*\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Headers:
    """Response headers in order; lookups are case-insensitive, repeats joined by ", "."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        values = [value for key, value in self._items if key.lower() == name]
        return ", ".join(values) if values else default

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class _Buffer:
    """Bytes read off the channel and not yet consumed, with the newest read's stamp."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.data = bytearray()
        self.stamp: ReadStamp | None = None
        self.eof = False
        self.wire_bytes = 0

    def fill(self, deadline: Deadline) -> bool:
        if self.eof:
            return False
        data, stamp = self.channel.recv(_READ_BYTES, deadline)
        self.stamp = stamp
        if not data:
            self.eof = True
            return False
        self.wire_bytes += len(data)
        self.data += data
        return True

    def line(self, limit: int, deadline: Deadline, what: str) -> bytes:
        """One line including its LF; fails past ``limit`` bytes or at EOF."""
        start = 0
        while True:
            end = self.data.find(b"\n", start)
            if end >= 0:
                if end + 1 > limit:
                    break
                line = bytes(self.data[: end + 1])
                del self.data[: end + 1]
                return line
            if len(self.data) > limit:
                break
            start = len(self.data)
            if not self.fill(deadline):
                raise HTTPFailure(
                    deadline.phase, Kind.CLOSED, f"connection closed in the middle of {what}"
                )
        raise HTTPFailure(deadline.phase, Kind.TOO_LARGE, f"{what} longer than {limit} bytes")


def read_head(channel: Channel, deadline: Deadline) -> Response:
    """The final response's status line and headers (interim 1xx responses skipped)."""
    buffer = _Buffer(channel)
    for _ in range(MAX_INTERIM + 1):
        status, reason, version, headers = _one_head(buffer, deadline)
        if status >= 200 or status == 101:
            assert buffer.stamp is not None
            return Response(buffer, status, reason, version, headers, buffer.stamp)
    raise HTTPFailure(Phase.HEADERS, Kind.MALFORMED, f"more than {MAX_INTERIM} interim responses")


def _one_head(buffer: _Buffer, deadline: Deadline) -> tuple[int, str, str, Headers]:
    # Not HTTP at all (a TLS server, HTTP/0.9): say so at once, not at the deadline.
    while len(buffer.data) < 5 and b"\n" not in buffer.data and buffer.fill(deadline):
        pass
    if buffer.data and not b"HTTP/".startswith(bytes(buffer.data[:5])):
        raise HTTPFailure(Phase.HEADERS, Kind.MALFORMED, "the answer is not an HTTP/1.x response")
    try:
        first = buffer.line(MAX_STATUS_LINE, deadline, "the status line")
    except HTTPFailure as failure:
        if failure.kind is Kind.CLOSED and not buffer.data and buffer.wire_bytes == 0:
            raise HTTPFailure(
                Phase.HEADERS, Kind.CLOSED, "connection closed without a response"
            ) from None
        raise
    match = _STATUS_LINE.fullmatch(first)
    if match is None:
        raise HTTPFailure(Phase.HEADERS, Kind.MALFORMED, "the answer is not an HTTP/1.x response")
    version = "HTTP/" + match.group(1).decode()
    status = int(match.group(2))
    reason = (match.group(3) or b"").decode("latin-1").strip()
    items: list[tuple[str, str]] = []
    size = len(first)
    while True:
        line = buffer.line(MAX_HEAD_BYTES - size, deadline, "the response headers")
        size += len(line)
        if not line.rstrip(b"\r\n"):
            return status, reason, version, Headers(items)
        if len(items) >= MAX_HEADERS:
            raise HTTPFailure(
                Phase.HEADERS, Kind.TOO_LARGE, f"more than {MAX_HEADERS} response headers"
            )
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HTTPFailure(Phase.HEADERS, Kind.MALFORMED, "a response header line is malformed")
        items.append((name.decode("ascii"), value.strip().decode("latin-1")))


class _Decoder:
    """Content coding, bounded per call: what does not fit stays compressed for later."""

    def __init__(self, coding: str) -> None:
        coding = coding.strip().lower()
        self.coding = coding
        self._zlib: zlib._Decompress | None = None
        self._tail = b""
        self._sniffed = coding != "deflate"
        if coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        elif coding not in ("", "identity"):
            raise HTTPFailure(
                Phase.BODY, Kind.MALFORMED, f"unsupported Content-Encoding {coding[:40]!r}"
            )

    @property
    def pending(self) -> bool:
        return bool(self._tail)

    def decode(self, data: bytes, limit: int) -> bytes:
        if self._zlib is None:
            return data
        data = self._tail + data
        try:
            out = self._zlib.decompress(data, limit)
        except zlib.error:
            if self._sniffed:
                raise HTTPFailure(Phase.BODY, Kind.MALFORMED, "cannot decode the body") from None
            # "deflate" is raw DEFLATE for some servers, zlib-wrapped for others.
            self._sniffed = True
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(data, limit)
        self._sniffed = True
        self._tail = self._zlib.unconsumed_tail
        return out

    def finish(self) -> None:
        if self._zlib is not None and not self._zlib.eof and self.coding != "deflate":
            raise HTTPFailure(Phase.BODY, Kind.MALFORMED, "the compressed body is incomplete")


class Response:
    """One response's head, and its body read piece by piece as it arrives."""

    def __init__(
        self,
        buffer: _Buffer,
        status: int,
        reason: str,
        version: str,
        headers: Headers,
        head_stamp: ReadStamp,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.head_stamp = head_stamp
        self._buffer = buffer
        self._decoder: _Decoder | None = None
        self._done = False
        self._chunk_left = 0  # bytes left in the current chunk; -1 between chunks
        transfer = (headers.get("Transfer-Encoding") or "").lower()
        self._chunked = transfer.rsplit(",", 1)[-1].strip() == "chunked"
        length = headers.get("Content-Length")
        self._length: int | None = None
        if status in (204, 304) or 100 <= status < 200:
            self._length = 0
        elif not self._chunked and length is not None:
            if not length.strip().isdigit():
                raise HTTPFailure(Phase.HEADERS, Kind.MALFORMED, "bad Content-Length")
            self._length = int(length)
        self._chunk_left = -1

    @property
    def wire_bytes(self) -> int:
        return self._buffer.wire_bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def media_type(self) -> str:
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    def read_some(self, deadline: Deadline, limit: int = _READ_BYTES) -> tuple[bytes, ReadStamp]:
        """Decoded body bytes from what one socket read brought (b"" at the end)."""
        if self._decoder is None:
            self._decoder = _Decoder(self.headers.get("Content-Encoding") or "")
        decoder = self._decoder
        while True:
            if decoder.pending:
                out = decoder.decode(b"", limit)
            else:
                raw = self._framed(deadline)
                if raw is None:
                    decoder.finish()
                    return b"", self._current_stamp()
                out = decoder.decode(raw, limit)
            if out:
                stamp = self._current_stamp()
                if (decoder.pending or self._buffer.data) and stamp.tail_exact:
                    stamp = dataclasses.replace(stamp, tail_exact=False)
                return out, stamp

    def read_all(self, deadline: Deadline, limit: int) -> bytes:
        """The whole decoded body; ``too_large`` past ``limit`` bytes."""
        body = bytearray()
        while True:
            data, _stamp = self.read_some(deadline, limit + 1 - len(body))
            if not data:
                return bytes(body)
            body += data
            if len(body) > limit:
                raise HTTPFailure(Phase.BODY, Kind.TOO_LARGE, f"body larger than {limit} bytes")

    def _current_stamp(self) -> ReadStamp:
        assert self._buffer.stamp is not None
        return self._buffer.stamp

    def _framed(self, deadline: Deadline) -> bytes | None:
        """Body bytes (still content-coded) available now or after more reads; None at
        the end of the body."""
        while not self._done:
            out = self._take_chunked(deadline) if self._chunked else self._take_plain()
            if out:
                return out
            if self._done:
                break
            if not self._buffer.fill(deadline):
                if self._chunked or self._length is not None:
                    raise HTTPFailure(
                        Phase.BODY, Kind.CLOSED, "connection closed before the body ended"
                    )
                self._done = True
        return None

    def _take_plain(self) -> bytes:
        data = self._buffer.data
        take = len(data) if self._length is None else min(len(data), self._length)
        out = bytes(data[:take])
        del data[:take]
        if self._length is not None:
            self._length -= take
            self._done = self._length == 0
        return out

    def _take_chunked(self, deadline: Deadline) -> bytes:
        """All complete chunk data in the buffer now; b"" when more must be read first."""
        data = self._buffer.data
        out = bytearray()
        while True:
            if self._chunk_left > 0:
                take = min(len(data), self._chunk_left)
                out += data[:take]
                del data[:take]
                self._chunk_left -= take
                if self._chunk_left > 0:
                    return bytes(out)
                self._chunk_left = -2  # the CRLF after the data comes next
            if self._chunk_left == -2:
                if data[:2] == b"\r\n":
                    del data[:2]
                elif data[:1] == b"\n":
                    del data[:1]
                elif bytes(data) in (b"", b"\r"):
                    return bytes(out)
                else:
                    raise HTTPFailure(Phase.BODY, Kind.MALFORMED, "bad chunked framing")
                self._chunk_left = -1
            end = data.find(b"\n")
            if end < 0:
                if len(data) > _MAX_CHUNK_LINE:
                    raise HTTPFailure(Phase.BODY, Kind.MALFORMED, "bad chunked framing")
                return bytes(out)
            size_text = bytes(data[:end]).split(b";", 1)[0].strip()
            del data[: end + 1]
            if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise HTTPFailure(Phase.BODY, Kind.MALFORMED, "bad chunked framing")
            size = int(size_text, 16)
            if size == 0:
                self._skip_trailers(deadline)
                self._done = True
                return bytes(out)
            self._chunk_left = size

    def _skip_trailers(self, deadline: Deadline) -> None:
        size = 0
        while True:
            line = self._buffer.line(MAX_HEAD_BYTES - size, deadline, "the chunked trailer")
            size += len(line)
            if not line.rstrip(b"\r\n"):
                return
