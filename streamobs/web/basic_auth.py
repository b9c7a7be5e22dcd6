"""HTTP basic auth against bcrypt hashes, shaped like the Prometheus exporter-toolkit's.

- An unknown user is checked against a dummy hash of the same cost as the real ones, so
  the answer takes as long as for a known user with a wrong password: timing does not tell
  which users exist.
- bcrypt is slow by design. A successful check is remembered (keyed on the user and a
  digest of the password, never the password itself) so frequent scrapes stay cheap; only
  successes are remembered, so a flood of wrong passwords cannot evict them.
- bcrypt checks run one at a time: a flood of wrong passwords costs at most one core and
  never starves the threads answering cached (good) credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

# Successful (user, password digest) pairs remembered; more than any real set of scrapers.
CACHE_SIZE = 256


def bcrypt_cost(hashed: bytes) -> int:
    """The cost factor of a ``$2y$10$...`` hash (10 when it cannot be read)."""
    parts = hashed.split(b"$")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return 10


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        costs = sorted(bcrypt_cost(h) for h in self._users.values())
        # The most expensive configured cost: an unknown user is never the fast answer.
        cost = min(max(costs[-1] if costs else 10, 4), 31)
        self._dummy = bcrypt.hashpw(b"streamobs-unknown-user", bcrypt.gensalt(rounds=cost))
        self._cache: OrderedDict[str, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BasicAuth(users={sorted(self._users)})"

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        """Check an ``Authorization: Basic`` header value."""
        credentials = _decode(header)
        if credentials is None:
            return False
        user, password = credentials
        known = self._users.get(user)
        hashed = known if known is not None else self._dummy
        key = _cache_key(user, hashed, password)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        with self._bcrypt_lock:
            try:
                ok = bcrypt.checkpw(password, hashed)
            except ValueError:  # e.g. a password longer than bcrypt's 72 bytes
                ok = False
        if not (ok and known is not None):
            return False
        with self._cache_lock:
            self._cache[key] = None
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return True

    def cached_entries(self) -> int:
        with self._cache_lock:
            return len(self._cache)


def _decode(header: str | None) -> tuple[str, bytes] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None


def _cache_key(user: str, hashed: bytes, password: bytes) -> str:
    # Keyed by the hash too, so a changed hash in a reloaded file never matches an old entry.
    digest = hmac.new(hashed, user.encode() + b"\0" + password, hashlib.sha256)
    return digest.hexdigest()
