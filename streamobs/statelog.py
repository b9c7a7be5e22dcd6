"""Log a condition when it starts and when it ends, not on every pass: the one "log once"
mechanism of the code base, for collectors, exporters and endpoints alike."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable

HEALTHY = ""


class StateLog:
    """A state per key; ``changed()`` is True when the key's state differs from the last
    one seen. Every key starts healthy (``""``), so a healthy start logs nothing. At most
    ``max_keys`` keys are remembered (least recently changed go first), so keys taken from
    the outside (hosts, targets) cannot grow it without bound."""

    def __init__(self, logger: logging.Logger, max_keys: int = 1024) -> None:
        self.log = logger
        self._max = max_keys
        self._lock = threading.Lock()
        self._states: OrderedDict[Hashable, str] = OrderedDict()

    def changed(self, key: Hashable, state: str) -> bool:
        with self._lock:
            if self._states.get(key, HEALTHY) == state:
                return False
            self._states[key] = state
            self._states.move_to_end(key)
            while len(self._states) > self._max:
                self._states.popitem(last=False)
            return True

    def report(self, key: Hashable, problem: str | None, down: str, up: str) -> None:
        """Log ``down`` (a warning naming ``problem``) when ``key`` turns bad or its problem
        changes, ``up`` (info) when it turns good again; nothing otherwise."""
        state = HEALTHY if problem is None else problem
        if not self.changed(key, state):
            return
        if problem is None:
            self.log.info("%s", up)
        else:
            self.log.warning("%s: %s", down, problem)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._states.pop(key, None)
