"""Which hosts a /probe module may send its credentials to.

``/probe?target=URL`` takes the URL from whoever asks, so a module's API key and headers
go only to hosts the module names in ``credential_hosts``. An entry is a host name or IP
address, optionally with a port (``vllm.internal:8000``, ``[::1]:8000``), and may use shell
wildcards (``*.inference.internal``, ``10.0.0.*``, ``gpu-*:8000``). Matching ignores case.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

_HOST = re.compile(r"^[A-Za-z0-9*?._\-\[\]:%]+$")


class CredentialHostError(ValueError):
    """An entry that cannot be a host pattern; the message says why."""


@dataclass(frozen=True, slots=True)
class HostPattern:
    host: str  # lower case, may hold wildcards
    port: str | None  # digits or a wildcard; None: any port

    def matches(self, host: str, port: int) -> bool:
        if not fnmatch.fnmatchcase(host.lower(), self.host):
            return False
        return self.port is None or fnmatch.fnmatchcase(str(port), self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_host_pattern(entry: object) -> HostPattern:
    if not isinstance(entry, str) or not entry.strip():
        raise CredentialHostError("expected a host name or pattern")
    text = entry.strip().lower()
    if not _HOST.match(text):
        raise CredentialHostError(
            f"{text[:80]!r} is not a host pattern (a host, host:port, no scheme or path)"
        )
    port: str | None = None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise CredentialHostError(f"{text[:80]!r}: bad bracketed IPv6 address")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, or a bare IPv6 address
        host = text
    if not host or "[" in host or "]" in host:
        raise CredentialHostError(f"{text[:80]!r}: no host")
    if port is not None and not re.fullmatch(r"[0-9*?]+", port):
        raise CredentialHostError(f"{text[:80]!r}: the port must be digits or a wildcard")
    return HostPattern(host, port)


def host_allowed(patterns: tuple[HostPattern, ...], host: str, port: int) -> bool:
    return any(p.matches(host, port) for p in patterns)
