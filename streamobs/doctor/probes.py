"""The streaming probes several checks share, each run at most once, on first use."""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamobs.doctor.options import Budget, DoctorOptions
from streamobs.probe import ProbeResult, ProbeSpec, Target, Timeouts, run_probe
from streamobs.probe.spec import DEFAULT_ACCEPT_ENCODING

# Enough tokens for the delivery analysis to say something, short enough to be quick.
SHORT_PROBE_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the server generates, as measured on a stream that was not buffered."""

    ttft: float  # seconds
    per_token: float  # seconds
    prompt_tokens: int | None
    source: str  # which probe it came from

    def tokens_lasting(self, seconds: float) -> int:
        """How many tokens to ask for so that the stream lasts about ``seconds``."""
        return max(16, math.ceil(max(seconds - self.ttft, 0.0) / self.per_token) + 1)


class Probes:
    """Runs the shared probes lazily; a skipped check costs no traffic."""

    def __init__(self, options: DoctorOptions, model: str, budget: Budget) -> None:
        self.options = options
        self.model = model
        self.budget = budget
        self._cache: dict[str, ProbeResult] = {}

    def spec(
        self,
        target: Target,
        max_tokens: int,
        *,
        accept_encoding: str = DEFAULT_ACCEPT_ENCODING,
        total: float | None = None,
    ) -> ProbeSpec:
        bound = self.options.timeout if total is None else total
        first = min(self.options.timeout, bound)
        return ProbeSpec(
            target=target,
            model=self.model,
            max_tokens=max_tokens,
            timeouts=Timeouts(
                connect=min(5.0, first), headers=first, first_token=first, total=bound
            ),
            api_key=self.options.api_key,
            basic_auth=self.options.basic_auth,
            accept_encoding=accept_encoding,
        )

    def _short(self, key: str, target: Target, accept_encoding: str) -> ProbeResult:
        if key not in self._cache:
            total = self.budget.bound(self.options.timeout)
            spec = self.spec(
                target, SHORT_PROBE_TOKENS, accept_encoding=accept_encoding, total=total
            )
            self._cache[key] = run_probe(spec)
        return self._cache[key]

    def path(self) -> ProbeResult:
        """Through URL, accepting gzip as SDK clients do: what users get."""
        return self._short("path", self.options.target, DEFAULT_ACCEPT_ENCODING)

    def path_identity(self) -> ProbeResult:
        """Through URL, refusing compression."""
        return self._short("identity", self.options.target, "identity")

    def direct(self) -> ProbeResult | None:
        if self.options.direct is None:
            return None
        return self._short("direct", self.options.direct, DEFAULT_ACCEPT_ENCODING)

    def pace(self) -> Pace | None:
        """Generation speed from the first stream that arrived token by token: the direct
        one, then the path with and without compression."""
        candidates = [("direct", self.direct()), ("path", self.path())]
        if not _streamed(candidates[1][1]):
            candidates.append(("path without compression", self.path_identity()))
        for source, result in candidates:
            if result is not None and _streamed(result):
                assert result.first_token_ns is not None and result.tpot_ns is not None
                return Pace(
                    ttft=result.first_token_ns / 1e9,
                    per_token=result.tpot_ns / 1e9,
                    prompt_tokens=result.prompt_tokens,
                    source=source,
                )
        return None


def _streamed(result: ProbeResult | None) -> bool:
    return (
        result is not None
        and result.ok
        and result.delivery is not None
        and not result.delivery.buffered
        and result.tpot_ns is not None
        and result.tpot_ns > 0
        and result.first_token_ns is not None
    )
