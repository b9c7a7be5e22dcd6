"""The receiver, the join and the forwarder together: what the daemon (and ``streamobs
probe --traces-receiver``) start and stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from streamobs.traces.decode import Decoded
from streamobs.traces.forward import Destination, Forwarder
from streamobs.traces.join import OnSpan, SpanJoin
from streamobs.traces.receiver import TraceReceiver
from streamobs.traces.records import ServerSpan
from streamobs.traces.settings import TracesReceiverSettings
from streamobs.traces.stats import TracesStats

log = logging.getLogger(__name__)


class TracesService:
    def __init__(
        self, settings: TracesReceiverSettings, destination: Destination | None = None
    ) -> None:
        self.settings = settings
        self.join = SpanJoin(settings.join_wait, settings.max_pending)
        self.forwarder: Forwarder | None = None
        if destination is not None and settings.forward:
            self.forwarder = Forwarder(destination, settings.forward_queue_size)
        self.receiver = TraceReceiver(settings, self._on_body)

    def _on_body(self, body: bytes, decoded: Decoded) -> None:
        if self.forwarder is not None:
            self.forwarder.submit(body)  # every span, ours or not, exactly as it came
        self.join.offer(decoded.llm_requests)

    def expect(self, trace_id: str, on_span: OnSpan) -> None:
        self.join.expect(trace_id, on_span)

    def wait_for(self, trace_id: str, timeout: float) -> ServerSpan | None:
        """Block up to ``timeout`` (or the join's wait, if shorter) for one trace's span."""
        done = threading.Event()
        found: list[ServerSpan | None] = [None]

        def on_span(span: ServerSpan | None) -> None:
            found[0] = span
            done.set()

        self.join.expect(trace_id, on_span)
        done.wait(timeout)
        return found[0]

    def wait_for_all(
        self, trace_ids: Sequence[str], timeout: float
    ) -> dict[str, ServerSpan | None]:
        """The span of each trace id that comes within ``timeout`` (None for the rest)."""
        lock = threading.Condition()
        found: dict[str, ServerSpan | None] = {}

        def waiter(trace_id: str) -> OnSpan:
            def on_span(span: ServerSpan | None) -> None:
                with lock:
                    found[trace_id] = span
                    lock.notify_all()

            return on_span

        wanted = set(trace_ids)
        for trace_id in wanted:
            self.join.expect(trace_id, waiter(trace_id))
        with lock:
            lock.wait_for(lambda: wanted <= set(found), timeout)
            return {trace_id: found.get(trace_id) for trace_id in trace_ids}

    def stats(self) -> TracesStats:
        forward = None if self.forwarder is None else self.forwarder.stats()
        return TracesStats(self.receiver.stats(), self.join.stats(), forward)

    def bind(self) -> None:
        """Take the listening sockets now (OSError or ValueError when an address cannot
        be served), so a daemon can refuse to start before anything else runs."""
        self.receiver.bind()

    def start(self) -> None:
        """Bind (unless done) and serve; OSError or ValueError as ``bind``."""
        self.receiver.start()
        self.join.start()
        if self.forwarder is not None:
            self.forwarder.start()
        where = ", ".join(
            f"{kind} {address}"
            for kind, address in (
                ("OTLP/HTTP", self.settings.http_address),
                ("OTLP/gRPC", self.settings.grpc_address),
            )
            if address
        )
        forward = f"; forwarding to {self.forwarder.destination.endpoint}" if self.forwarder else ""
        log.info("trace receiver listening on %s%s", where, forward)

    def stop(self, timeout: float = 2.0) -> None:
        self.receiver.stop(timeout)
        self.join.stop(timeout)
        if self.forwarder is not None:
            self.forwarder.stop(timeout)
