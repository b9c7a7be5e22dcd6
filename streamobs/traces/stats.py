"""Cumulative counts of the receiver, the join and the forwarder: immutable snapshots the
exporters read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    requests: int = 0  # accepted requests (bodies decoded)
    spans: int = 0  # spans in them
    llm_request_spans: int = 0
    refused_too_large: int = 0
    refused_busy: int = 0
    refused_bad: int = 0  # not OTLP protobuf, bad encoding, bad path


@dataclass(frozen=True, slots=True)
class JoinStats:
    """Cumulative counts since the join was made."""

    joined: int = 0  # spans matched to their probe
    unmatched: int = 0  # spans no probe of ours claimed (another client's, a duplicate)
    late: int = 0  # spans that came after their probe's wait had ended
    probes_unjoined: int = 0  # probes whose wait ended without a span
    probes_dropped: int = 0  # pending probes pushed out by newer ones (max_pending)


@dataclass(frozen=True, slots=True)
class ForwardStats:
    forwarded: int = 0  # bodies the downstream accepted
    dropped: int = 0  # bodies not queued: the queue was full (or forwarding stopped)
    failed: int = 0  # bodies the downstream refused or never answered for


@dataclass(frozen=True, slots=True)
class TracesStats:
    receiver: ReceiverStats
    join: JoinStats
    forward: ForwardStats | None  # None: not forwarding
