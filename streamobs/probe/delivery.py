"""Stream-delivery quality: were tokens handed over as generated, or held and burst?"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from streamobs.probe.result import Delivery

# Content events closer together than this arrived together: no model emits tokens 1 ms
# apart, while a proxy flushing its buffer hands them over within microseconds.
BURST_GAP_NS = 1_000_000
# Fewer content events than this say nothing about buffering either way.
MIN_TOKENS_FOR_VERDICT = 4
BUFFERED_BURST_SHARE = 0.5


def analyse_delivery(
    reads: int,
    events_by_read: Sequence[int],
    token_arrivals_ns: Sequence[int],
    token_reads: Sequence[int],
    vouched_reads: Collection[int] | None = None,
) -> Delivery:
    """``events_by_read``: data events completed by each read that completed any;
    ``token_arrivals_ns``/``token_reads``: arrival time and read index of each content event;
    ``vouched_reads``: the reads whose events the client can vouch arrived together (it was
    waiting for them, not late); None: all of them. Events that piled up while the client
    was late are no evidence of a buffering path."""
    reads_with_events = len(events_by_read)
    events = sum(events_by_read)
    bursts: list[int] = []
    for index, arrival in enumerate(token_arrivals_ns):
        read = token_reads[index]
        vouched = vouched_reads is None or read in vouched_reads
        together = (
            index > 0
            and vouched
            and (
                read == token_reads[index - 1]
                or arrival - token_arrivals_ns[index - 1] < BURST_GAP_NS
            )
        )
        if together:
            bursts[-1] += 1
        else:
            bursts.append(1)
    tokens = len(token_arrivals_ns)
    in_bursts = sum(size for size in bursts if size > 1)
    share = in_bursts / tokens if tokens else 0.0
    return Delivery(
        reads=reads,
        reads_with_events=reads_with_events,
        events_per_read=events / reads_with_events if reads_with_events else 0.0,
        largest_burst=max(bursts, default=0),
        burst_share=share,
        buffered=tokens >= MIN_TOKENS_FOR_VERDICT and share >= BUFFERED_BURST_SHARE,
    )
