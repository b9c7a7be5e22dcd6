"""Incremental, byte-level Server-Sent Events decoder (WHATWG "event stream" rules).

Why not a library: the prober needs each event stamped with the time of the socket read
that completed it, and a bound on memory for a hostile or broken server. Lines are split
on the bytes CR, LF and CRLF only (a CRLF pair may be split across reads), so U+2028 and
U+2029 inside JSON payloads never split anything, unlike ``str.splitlines``.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_EVENT_BYTES = 4 << 20


class SSETooLarge(Exception):
    """A line or an event grew past the configured bound."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. ``received_ns`` is the stamp of the read that completed it."""

    data: str
    event: str
    received_ns: int


class SSEDecoder:
    """Feed raw bytes as they come off the socket; get back completed events.

    Comments (lines starting with ``:``, used as keep-alives) never produce events; they
    are counted in ``comments``. ``id`` and ``retry`` fields are accepted and ignored:
    a probe neither reconnects nor resumes.
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        self._line = bytearray()
        self._data: list[str] = []
        self._data_bytes = 0
        self._event_type = ""
        self._bom_checked = False
        self._head = bytearray()  # first bytes held until we know whether they are a BOM
        self._skip_lf = False  # previous read ended with CR: a leading LF belongs to it
        self.comments = 0
        self.last_comment_ns: int | None = None

    @property
    def has_pending(self) -> bool:
        """True when a partial line or an undispatched event is buffered."""
        return bool(self._line or self._data or self._event_type or self._head)

    def feed(self, chunk: bytes, received_ns: int) -> list[SSEEvent]:
        """Decode ``chunk``; return the events it completed, stamped ``received_ns``."""
        if not self._bom_checked:
            self._head += chunk
            if len(self._head) < len(_BOM) and _BOM.startswith(bytes(self._head)):
                return []
            chunk = bytes(self._head)
            self._head.clear()
            self._bom_checked = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        events: list[SSEEvent] = []
        pos = 0
        end = len(chunk)
        if self._skip_lf and end:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                pos = 1
        while pos < end:
            lf = chunk.find(b"\n", pos)
            cr = chunk.find(b"\r", pos, lf if lf >= 0 else end)
            brk = cr if cr >= 0 else lf
            if brk < 0:
                self._append_partial(chunk, pos, end)
                break
            self._append_partial(chunk, pos, brk)
            line = bytes(self._line)
            self._line.clear()
            self._process_line(line, received_ns, events)
            pos = brk + 1
            if chunk[brk] == 0x0D:
                if pos < end:
                    if chunk[pos] == 0x0A:
                        pos += 1
                else:
                    self._skip_lf = True
        return events

    def _append_partial(self, chunk: bytes, start: int, stop: int) -> None:
        if len(self._line) + (stop - start) > self._max_line:
            raise SSETooLarge(f"SSE line longer than {self._max_line} bytes")
        self._line += chunk[start:stop]

    def _process_line(self, raw: bytes, received_ns: int, out: list[SSEEvent]) -> None:
        if not raw:
            self._dispatch(received_ns, out)
            return
        if raw[0] == 0x3A:  # ":" comment, the usual keep-alive
            self.comments += 1
            self.last_comment_ns = received_ns
            return
        line = raw.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw) + 1
            if self._data_bytes > self._max_event:
                raise SSETooLarge(f"SSE event larger than {self._max_event} bytes")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        # "id", "retry" and unknown fields are ignored by design (see class docstring).

    def _dispatch(self, received_ns: int, out: list[SSEEvent]) -> None:
        if self._data:
            out.append(SSEEvent("\n".join(self._data), self._event_type or "message", received_ns))
        self._data.clear()
        self._data_bytes = 0
        self._event_type = ""
