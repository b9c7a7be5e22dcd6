"""The streaming prober: one deterministic request, every phase stamped."""

from streamobs.probe.models import ModelDiscoveryError, discover_model
from streamobs.probe.prober import run_probe
from streamobs.probe.result import Degraded, Delivery, Outcome, ProbeResult, TimingQuality
from streamobs.probe.spec import ProbeSpec, Target, TargetError, Timeouts, parse_target

__all__ = [
    "Degraded",
    "Delivery",
    "ModelDiscoveryError",
    "Outcome",
    "ProbeResult",
    "ProbeSpec",
    "Target",
    "TargetError",
    "Timeouts",
    "TimingQuality",
    "discover_model",
    "parse_target",
    "run_probe",
]
