"""Scrape every engine's ``/metrics`` in the background, keeping the latest snapshot.

Off the scrape path on purpose: a slow engine must not slow our own ``/metrics``, and the
scrape interval of whoever reads us must not change how often we load the engine. A
reload updates the engine list in place: unchanged engines keep their snapshot and
schedule. One poller serves every engine kind; each kind's registered collector is a
``KindView`` of it (see ``registry.py``), so an engine is scraped once whatever its kind.

One timer thread and a pool of at most ``SCRAPE_WORKERS`` threads, not a thread per
target: a target is back on the timer only once its scrape has ended, so it never
overlaps itself, and a thousand engines cost a heap entry each.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from streamobs.collectors.by_name import ByName
from streamobs.collectors.engines.export import UNRESOLVED, EngineExporter
from streamobs.collectors.engines.scrape import EngineSnapshot, scrape_engine
from streamobs.collectors.engines.settings import EngineCollectorConfig
from streamobs.collectors.guard import Export, Health
from streamobs.statelog import StateLog

log = logging.getLogger(__name__)

SnapshotCallback = Callable[[str, EngineSnapshot], None]
SCRAPE_WORKERS = 16  # scrapes at once, across all targets (each bounded by its timeout)
START_SPREAD_PER_ENGINE = 0.1  # seconds of first-scrape spread each engine adds


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """What the collector needs of an engine: its name, its /metrics, how often, and its
    kind (None: recognised from what it serves)."""

    name: str
    metrics_url: str
    interval: float
    kind: str | None = None


class _Entry:
    """One target's place on the timer; ``cancelled`` once it changed or left."""

    __slots__ = ("cancelled", "target")

    def __init__(self, target: ScrapeTarget) -> None:
        self.target = target
        self.cancelled = False


class _OneEngine:
    """One engine's own families without health (the guard reports health once)."""

    def __init__(self, poller: EnginePoller, engine: str) -> None:
        self._poller = poller
        self._engine = engine

    def collect(self) -> list[Metric]:
        kinds = self._poller.exported_kinds()
        return self._poller.reexposer.export(kinds, only=self._engine).families


@dataclass(frozen=True, slots=True)
class _Block:
    """One family of one engine's rendered text: its HELP and TYPE lines and its samples."""

    name: str
    type: str
    header: str
    samples: str


def _blocks(text: str) -> tuple[_Block, ...]:
    """Rendered text into its families (prometheus_client writes HELP, TYPE, samples).
    Only a line can start with ``# HELP``: label values and HELP texts escape newlines."""
    blocks = []
    for chunk in ("\n" + text).split("\n# HELP ")[1:]:
        help_line, _, rest = chunk.partition("\n")
        type_line, _, samples = rest.partition("\n")
        if samples and not samples.endswith("\n"):
            samples += "\n"  # the separator took the line end
        header = f"# HELP {help_line}\n{type_line}\n"
        name, kind = help_line.split(" ", 1)[0], type_line.rsplit(" ", 1)[-1]
        blocks.append(_Block(name, kind, header, samples))
    return tuple(blocks)


def _merged(engines: Iterable[tuple[str, tuple[_Block, ...]]]) -> tuple[str, list[str]]:
    """The engines' families as one text, each announced once (the first engine's HELP),
    and the names skipped because an earlier engine has the family with another type."""
    by_name: ByName[_Block] = ByName()
    conflicts = [
        f"{engine}: {block.name}"
        for engine, blocks in engines
        for block in blocks
        if not by_name.add(block.name, block.type, block)
    ]
    text = "".join(
        group[0].header + "".join(block.samples for block in group) for group in by_name.groups()
    )
    return text, conflicts


class KindView:
    """One engine kind's registered collector: that kind's engines of the shared poller
    (``kind`` None: the engines whose kind is not known). The poller runs while any view
    of it runs."""

    def __init__(self, poller: EnginePoller, kind: str | None) -> None:
        self.poller = poller
        self.kind = kind
        self.name = kind or UNRESOLVED

    def start(self) -> None:
        self.poller.acquire(self)

    def stop(self, timeout: float = 5.0) -> None:
        self.poller.release(self, timeout)

    def sources(self) -> Sequence[str]:
        return self.poller.sources((self.kind,))

    def export(self) -> Export:
        return self.poller.export((self.kind,))


class EnginePoller:
    name = UNRESOLVED

    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        config: EngineCollectorConfig,
        on_snapshot: SnapshotCallback | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._config = config
        self._on_snapshot = on_snapshot
        self._latest: dict[str, EngineSnapshot] = {}
        self._lock = threading.Lock()
        # The engines' own families, rendered once per new snapshot, not per scrape: the
        # generation tells a render that raced with a new snapshot not to keep its text.
        self._generation = 0
        self._reexposed: bytes | None = None
        # And each engine's, kept until its own next snapshot: a new snapshot of one engine
        # re-renders that engine alone, not a fleet's worth of samples.
        self._engine_blocks: dict[str, tuple[_Block, ...]] = {}
        self._engine_generation: dict[str, int] = {}
        self._reexpose_error: str | None = None
        self._states = StateLog(log)
        self._entries: dict[str, _Entry] = {}
        self._timers: list[tuple[float, int, _Entry]] = []  # (due, seq, entry)
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running = 0  # scrapes handed to the pool and not yet ended
        self._started = False
        self._views: set[int] = set()  # the running KindViews, by id
        # One exporter each for the whole life of the poller: they log target states once
        # per change, which exporters made per render would repeat on every new snapshot.
        kinds = self._configured_kinds()
        self._normalised = EngineExporter(self.latest, targets=kinds)
        self.reexposer = EngineExporter(
            self.latest,
            targets=kinds,
            reexpose=True,
            # Only the engines' own families: their process_*/python_* would collide with ours.
            engine_families_only=True,
            normalise=False,
        )

    def _configured_kinds(self) -> dict[str, str | None]:
        return {t.name: t.kind for t in self._targets}

    def configured_kinds(self) -> dict[str, str | None]:
        """Every engine by name, with its configured kind (None: recognised)."""
        with self._lock:
            return self._configured_kinds()

    def exported_kinds(self) -> tuple[str | None, ...]:
        """The kinds whose collector is on, and None: an engine of unknown kind is still
        re-exposed (and reported)."""
        with self._lock:
            return (*sorted(self._config.kinds), None)

    # -- the registered collectors' side ----------------------------------------------
    def view(self, kind: str | None) -> KindView:
        return KindView(self, kind)

    def sources(self, kinds: Sequence[str | None] | None = None) -> Sequence[str]:
        latest = self.latest()
        return [
            name
            for name in self.target_names
            if kinds is None or self._normalised.kind_of(name, latest.get(name)) in kinds
        ]

    def export(self, kinds: Sequence[str | None] | None = None) -> Export:
        """The normalised families and the health of the engines of ``kinds`` (None:
        all); re-exposure failing (see ``reexposed_text``) is an engine down too, since
        its series are then missing."""
        export = self._normalised.export(kinds)
        with self._lock:
            failed = self._reexpose_error is not None
        if not failed:
            return export
        health = [Health(h.collector, h.target, False, h.duration_seconds) for h in export.health]
        return Export(export.families, health)

    @property
    def target_names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(t.name for t in self._targets)

    def latest(self) -> Mapping[str, EngineSnapshot]:
        with self._lock:
            return dict(self._latest)

    def reexposed_text(self) -> bytes:
        """The engines' own families in the text format, exactly as they serve them (with
        an ``engine`` label when there are several engines), or nothing when re-exposure
        is off. Formatting thousands of engine samples on every scrape of ours would
        dominate its cost; an engine's text only changes with its own new snapshot, so it
        is rendered then, at most once, and the engines' texts are joined family by family
        (each announced once). Never raises: a failure is logged once and reported down."""
        if not self._config.reexpose:
            return b""
        with self._lock:
            cached, generation = self._reexposed, self._generation
            kept = dict(self._engine_blocks)
            generations = dict(self._engine_generation)
            engines = [t.name for t in self._targets]
        if cached is not None:
            return cached
        fresh: dict[str, tuple[_Block, ...]] = {}
        try:
            for engine in engines:
                if engine not in kept:
                    registry = CollectorRegistry(auto_describe=False)
                    registry.register(_OneEngine(self, engine))
                    fresh[engine] = _blocks(generate_latest(registry).decode("utf-8"))
            merged, conflicts = _merged((e, kept[e] if e in kept else fresh[e]) for e in engines)
            text, error = merged.encode("utf-8"), None
        except Exception as exc:
            text, error, conflicts = b"", repr(exc), []
        shown = ", ".join(conflicts)
        if self._states.changed("reexpose conflicts", shown) and shown:
            log.warning("not re-exposing %s: already exposed with another type", shown)
        self._states.report(
            "reexpose",
            error,
            "cannot re-expose the engines' own series, reporting every engine down",
            "the engines' own series are re-exposed again",
        )
        with self._lock:
            self._reexpose_error = error
            for engine, blocks in fresh.items():
                if self._engine_generation.get(engine) == generations.get(engine):
                    self._engine_blocks[engine] = blocks
            if generation == self._generation and error is None:
                self._reexposed = text
        return text

    # -- lifecycle -------------------------------------------------------------------
    def acquire(self, view: object) -> None:
        """A view started: the poller runs from the first one on."""
        with self._lock:
            self._views.add(id(view))
        self.start()

    def release(self, view: object, timeout: float = 5.0) -> None:
        """A view stopped: the poller stops with the last one."""
        with self._lock:
            self._views.discard(id(view))
            last = not self._views
        if last:
            self.stop(timeout)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._pool = ThreadPoolExecutor(SCRAPE_WORKERS, thread_name_prefix="engine-scrape")
            for target in self._targets:
                self._begin(target)
            self._timer = threading.Thread(target=self._run_timer, name="engine-timer", daemon=True)
            self._timer.start()

    def update(self, targets: Sequence[ScrapeTarget], config: EngineCollectorConfig) -> None:
        """Take a reloaded config: unchanged targets keep their snapshot and schedule."""
        with self._lock:
            self._targets = tuple(targets)
            self._config = config
            wanted = {t.name: t for t in targets}
            for name, entry in list(self._entries.items()):
                if wanted.get(name) != entry.target:
                    entry.cancelled = True
                    del self._entries[name]
            for name in list(self._latest):
                if name not in wanted:
                    del self._latest[name]
            self._touch()
            for exporter in (self._normalised, self.reexposer):
                exporter.set_targets(self._configured_kinds())
            if self._started:
                for target in targets:
                    if target.name not in self._entries:
                        self._begin(target)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            for entry in self._entries.values():
                entry.cancelled = True
            self._entries.clear()
            self._timers.clear()
            self._started = False
            self._wake.notify_all()
            pool, timer = self._pool, self._timer
            self._pool = self._timer = None
            # Queued scrapes see their entry cancelled and end at once; running ones end
            # at their timeout.
            deadline = time.monotonic() + timeout
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._wake.wait(left)
        if pool is not None:
            pool.shutdown(wait=False)
        if timer is not None:
            timer.join(max(0.0, deadline - time.monotonic()))

    def _begin(self, target: ScrapeTarget) -> None:
        # Same cadence as the target's probes, offset so both do not always coincide, and
        # many engines spread over their interval (a tenth of a second each): scraped all
        # at once, their parsing would crowd out our own /metrics for a second or two.
        entry = _Entry(target)
        self._entries[target.name] = entry
        spread = min(target.interval, max(1.0, START_SPREAD_PER_ENGINE * len(self._targets)))
        self._push(entry, time.monotonic() + random.uniform(0, spread))

    def _push(self, entry: _Entry, due: float) -> None:
        earliest = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (due, next(self._seq), entry))
        if earliest is None or due < earliest:
            self._wake.notify()

    def _run_timer(self) -> None:
        with self._lock:
            while self._started and self._pool is not None:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, entry = heapq.heappop(self._timers)
                    if entry.cancelled:
                        continue
                    self._running += 1
                    self._pool.submit(self._scrape_entry, entry)
                wait = self._timers[0][0] - now if self._timers else None
                self._wake.wait(wait)

    def _scrape_entry(self, entry: _Entry) -> None:
        try:
            if not entry.cancelled:
                self.scrape_once(entry.target)
        except Exception:
            # A bug must cost one scrape, not this target's schedule.
            log.exception("engine %s: scraping failed", entry.target.name)
        finally:
            with self._lock:
                self._running -= 1
                if not entry.cancelled and self._started:
                    self._push(entry, time.monotonic() + entry.target.interval)
                self._wake.notify_all()

    def _touch(self, engine: str | None = None) -> None:
        """The rendered text is stale: one engine's (a new snapshot), or every engine's."""
        self._generation += 1
        self._reexposed = None
        if engine is None:
            self._engine_blocks.clear()
            self._engine_generation.clear()
        else:
            self._engine_blocks.pop(engine, None)
            self._engine_generation[engine] = self._engine_generation.get(engine, 0) + 1

    # -- scraping --------------------------------------------------------------------
    def scrape_once(self, target: ScrapeTarget) -> EngineSnapshot:
        with self._lock:
            config = self._config
        snapshot = scrape_engine(
            target.metrics_url,
            timeout=min(config.timeout, target.interval),
            max_bytes=config.max_bytes,
            kind=target.kind,
        )
        self.accept(target.name, snapshot)
        return snapshot

    def accept(self, target: str, snapshot: EngineSnapshot) -> None:
        """Make ``snapshot`` the latest of ``target`` and tell whoever listens."""
        with self._lock:
            if target not in {t.name for t in self._targets}:
                return  # removed while its scrape ran
            previous = self._latest.get(target)
            if not snapshot.up and previous is not None and previous.kind is not None:
                # Down is no news about the kind: keep the one recognised, so the engine's
                # health series does not change its collector label while it is down.
                snapshot = replace(snapshot, kind=previous.kind)
            self._latest[target] = snapshot
            self._touch(target)
        if self._on_snapshot is not None:
            try:
                self._on_snapshot(target, snapshot)
            except Exception:
                log.exception("engine %s: handling a snapshot failed", target)
