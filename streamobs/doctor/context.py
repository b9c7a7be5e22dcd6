"""Everything a check needs: the options, the model, the shared probes and the time left."""

from __future__ import annotations

from dataclasses import dataclass

from streamobs.doctor.options import Budget, DoctorOptions
from streamobs.doctor.probes import Probes
from streamobs.traces.service import TracesService


@dataclass(frozen=True, slots=True)
class Context:
    options: DoctorOptions
    model: str
    max_model_len: int | None  # from /v1/models when the server says (vLLM does)
    probes: Probes
    budget: Budget  # shared by every check but long-stream, which has its own bound
    # The server's own spans, when --traces-receiver runs one for the doctor.
    traces: TracesService | None = None
