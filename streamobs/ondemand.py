"""``/probe?target=URL&module=NAME``: one probe now, blackbox_exporter style, made safe for
a URL chosen by whoever asks.

- Credentials: the module's API key or basic auth and its headers go only to a host its
  ``credential_hosts`` names; any other host is probed without them (model discovery
  included), and the debug output and the log say so (never the values).
- Concurrency: these probes have their own budget of ``max_concurrency`` slots, apart from
  the scheduled probes, so a flood of scrapes can neither starve the SLO measurements nor
  run more than ``max_concurrency`` on-demand probes at once. At most as many requests
  again wait for a slot; past that, and when no slot frees up before the deadline, the
  answer is 503 at once.
- Deadline: the scrape timeout (less a margin for the reply) bounds model discovery and
  the probe together; when it passes, the answer is a failed probe at that moment, while
  the probe itself ends at its own (shortened) timeouts and only then frees its slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder, generate_latest

from streamobs.config import Config, ConfigError
from streamobs.credential_hosts import host_allowed
from streamobs.export.prometheus.blackbox import probe_registry
from streamobs.probe.result import Outcome, ProbeResult
from streamobs.probe.spec import ProbeSpec, Timeouts
from streamobs.report import redact_result
from streamobs.scheduler import ModelResolver
from streamobs.statelog import StateLog
from streamobs.targets import TargetConfig
from streamobs.web.server import Reply

log = logging.getLogger(__name__)

Probe = Callable[[ProbeSpec], ProbeResult]
_WARNED = 256  # (module, host) pairs remembered so a flood logs each pair once


class ProbeGate:
    """At most ``slots`` holders at once and at most ``waiting`` callers waiting for one."""

    def __init__(self, slots: int, waiting: int) -> None:
        self._cond = threading.Condition()
        self._slots, self._waiting_max = slots, waiting
        self.running = 0
        self.most_running = 0
        self._waiting = 0

    def resize(self, slots: int, waiting: int) -> None:
        with self._cond:
            self._slots, self._waiting_max = slots, waiting
            self._cond.notify_all()

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            if self.running >= self._slots:
                if self._waiting >= self._waiting_max:
                    return False
                self._waiting += 1
                try:
                    while self.running >= self._slots:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return False
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            return True

    def release(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What /probe did with the module's credentials: a sentence, never a value."""

    sent: bool
    note: str


class OnDemandProbes:
    def __init__(
        self,
        probe: Probe,
        discover: Callable[..., str],
        registry: CollectorRegistry,
        max_concurrency: int,
    ) -> None:
        self._probe = probe
        self._discover = discover
        self.gate = ProbeGate(max_concurrency, max_concurrency)
        self._warned = StateLog(log, max_keys=_WARNED)
        self._refused = Counter(
            "streamobs_probe_endpoint_refused",
            "/probe requests answered 503: every on-demand probe slot busy.",
            registry=registry,
        )
        self._withheld = Counter(
            "streamobs_probe_endpoint_credentials_withheld",
            "/probe requests run without the module's credentials: the host is not in its "
            "credential_hosts.",
            registry=registry,
        )
        running = Gauge(
            "streamobs_probe_endpoint_running",
            "On-demand /probe probes running now.",
            registry=registry,
        )
        running.set_function(lambda: self.gate.running)

    def resize(self, max_concurrency: int) -> None:
        self.gate.resize(max_concurrency, max_concurrency)

    def handle(
        self, config: Config, query: dict[str, list[str]], scrape_timeout: float | None
    ) -> Reply:
        urls = query.get("target", [])
        module = (query.get("module") or ["default"])[0]
        debug = (query.get("debug") or [""])[0].lower() in ("1", "true")
        if len(urls) != 1 or not urls[0]:
            return Reply(400, b"exactly one 'target' parameter is required\n")
        try:
            target = config.module_target(module, urls[0])
        except ConfigError as exc:
            return Reply(400, (str(exc) + "\n").encode())
        secrets = target.secrets()
        target, credentials = self._gate_credentials(config, module, target)
        deadline = target.timeouts.total
        if scrape_timeout is not None:
            deadline = min(deadline, _budget(scrape_timeout))
        started = time.monotonic()
        if not self.gate.acquire(deadline):
            self._refused.inc()
            return Reply(503, b"too many /probe requests at once; try again\n")
        left = max(deadline - (time.monotonic() - started), 0.1)
        # The probe's own timeouts end a little before the hard deadline, so a slow server
        # is reported by the probe itself (timeout_first_token, ...), not by the deadline.
        result = self._run(_within(target, left - min(0.2, left / 10)), left)
        if result is None:  # a bug, logged with its traceback; not a property of the target
            return Reply(500, b"the probe failed internally; see the daemon's log\n")
        return self._reply(redact_result(result, secrets), module, credentials, debug)

    def _gate_credentials(
        self, config: Config, module: str, target: TargetConfig
    ) -> tuple[TargetConfig, Credentials]:
        kinds = _credential_kinds(target)
        if not kinds:
            return target, Credentials(False, "none configured")
        host, port = target.target.host, target.target.port
        if host_allowed(config.modules[module].credential_hosts, host, port):
            return target, Credentials(True, "sent (the host is in credential_hosts)")
        self._withheld.inc()
        note = (
            f"withheld: module {module!r} does not name {host}:{port} in credential_hosts, "
            f"so the probe ran without its {kinds}"
        )
        self._warn_once(module, host, note)
        bare = replace(
            target, api_key=None, basic_auth=None, headers={}, secret_headers=frozenset()
        )
        return bare, Credentials(False, note)

    def _warn_once(self, module: str, host: str, note: str) -> None:
        if self._warned.changed((module, host), "withheld"):
            log.warning("/probe of %s: credentials %s", host, note)

    def _run(self, target: TargetConfig, deadline: float) -> ProbeResult | None:
        """The probe in its own thread, answered at ``deadline`` at the latest (None: the
        probe raised). The thread holds the slot until it really ends, so the concurrency
        bound stays true."""
        box: list[ProbeResult] = []
        begun_ns, begun_at = time.perf_counter_ns(), time.time()

        def work() -> None:
            try:
                model = ModelResolver(target, self._discover).model()
                box.append(self._probe(target.probe_spec(model)))
            except Exception:
                log.exception("/probe of %s: the probe itself failed", target.target.host)
            finally:
                self.gate.release()

        thread = threading.Thread(target=work, name="probe-on-demand", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the slot must not leak
            self.gate.release()
            raise
        thread.join(deadline)
        if box:
            return box[0]
        if not thread.is_alive():
            return None
        return ProbeResult(
            url=target.target.request_url,
            endpoint=target.target.endpoint,
            model=target.model or "unknown",
            outcome=Outcome.TIMEOUT_TOTAL,
            start_ns=begun_ns,
            started_at=begun_at,
            end_ns=time.perf_counter_ns() - begun_ns,
            error=f"no result within the /probe deadline of {deadline:.1f} s",
        )

    def _reply(
        self,
        result: ProbeResult,
        module: str,
        credentials: Credentials,
        debug: bool,
    ) -> Reply:
        registry = probe_registry(result)
        if not debug:
            encoder, content_type = choose_encoder("")
            return Reply(200, encoder(registry), content_type)
        lines = [
            f"Probe of {result.url} with module {module!r}",
            f"Credentials: {credentials.note}",
            f"Model: {result.model}",
            f"Outcome: {result.outcome.value}",
            f"Error: {result.error or '-'}",
            "",
            "Metrics that would have been returned:",
        ]
        body = "\n".join(lines).encode() + b"\n" + generate_latest(registry)
        return Reply(200, body)


def _credential_kinds(target: TargetConfig) -> str:
    """What of a target's would reach the server with its requests ("basic auth and
    headers"); empty when nothing."""
    kinds = [
        name
        for name, present in (
            ("API key", target.api_key is not None),
            ("basic auth", target.basic_auth is not None),
            ("headers", bool(target.headers)),
        )
        if present
    ]
    return " and ".join(kinds)


def _budget(scrape_timeout: float) -> float:
    """Leave half a second (or a tenth) of the scrape for rendering and the network."""
    return max(scrape_timeout - min(0.5, scrape_timeout / 10), 0.1)


def _within(target: TargetConfig, budget: float) -> TargetConfig:
    t = target.timeouts
    timeouts = Timeouts(
        connect=min(t.connect, budget),
        headers=min(t.headers, budget),
        first_token=min(t.first_token, budget),
        total=min(t.total, budget),
    )
    return replace(target, timeouts=timeouts)
