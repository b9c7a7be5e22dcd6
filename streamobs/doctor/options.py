"""What the user asked the doctor to look at, validated once, and the run's time bound."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from streamobs.probe.spec import Target, TargetError
from streamobs.secret import BasicAuth, Credential, Secret, credential_secrets

# In the order they run: the long-stream check last, as it takes longest.
CHECKS: tuple[str, ...] = (
    "buffering",
    "compression",
    "headers",
    "errors",
    "disconnect",
    "long-stream",
)

DEFAULT_LONG_STREAM = 75.0  # longer than the common 60 s proxy read timeout
DEFAULT_TIMEOUT = 30.0
# The short checks together may take this many --timeout (see Budget).
SHORT_BUDGET_TIMEOUTS = 4.0
# Less than this is not enough for even one request to say anything.
MIN_REQUEST_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    target: Target
    direct: Target | None = None
    metrics_url: str | None = None  # None: /metrics on the direct URL's server, else URL's
    model: str | None = None  # None: the first model /v1/models lists
    api_key: Secret | None = None  # sent as a bearer token
    basic_auth: BasicAuth | None = None  # or this: one Authorization header
    long_stream: float = DEFAULT_LONG_STREAM
    timeout: float = DEFAULT_TIMEOUT
    skip: frozenset[str] = field(default_factory=frozenset)
    # host:port (OTLP/HTTP) or grpc://host:port to receive the server's own spans on.
    traces_receiver: str | None = None

    def __post_init__(self) -> None:
        for name in ("long_stream", "timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise TargetError(f"{name.replace('_', '-')} must be a positive number of seconds")
        unknown = sorted(set(self.skip) - set(CHECKS))
        if unknown:
            raise TargetError(f"unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
        if self.metrics_url is not None:
            check_http_url(self.metrics_url, "metrics URL")
        if self.api_key is not None and self.basic_auth is not None:
            raise TargetError(
                "an API key and basic auth cannot both be sent: there is one Authorization header"
            )

    @property
    def credential(self) -> Credential | None:
        """What the ``Authorization`` header carries: the API key or basic auth, if any."""
        return self.api_key if self.api_key is not None else self.basic_auth

    def secrets(self) -> tuple[Secret, ...]:
        """What the doctor's output must never show (the credential, in every form)."""
        return credential_secrets(self.credential)

    @property
    def scrape_url(self) -> str:
        if self.metrics_url is not None:
            return self.metrics_url
        # vLLM serves /metrics on its API port; the direct URL is the server itself.
        root = (self.direct or self.target).api_root
        parts = urlsplit(root)
        return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def check_http_url(url: str, what: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise TargetError(f"bad {what} {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"bad {what} {url!r}: expected http(s)://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"bad {what}: credentials in the URL are not accepted")


class Budget:
    """A deadline shared by a series of requests, so the run as a whole stays bounded."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._deadline - self._clock())

    def bound(self, seconds: float) -> float:
        """A request's timeout: ``seconds``, cut to what is left, but never below the
        least a request needs (a request started just before the end may overrun by that)."""
        return max(MIN_REQUEST_SECONDS, min(seconds, self.remaining()))

    @property
    def exhausted(self) -> bool:
        return self.remaining() < MIN_REQUEST_SECONDS
