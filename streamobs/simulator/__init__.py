"""A built-in OpenAI-compatible streaming server shaped like vLLM 0.32, with fault knobs.

For demos, for testing the prober against known write times, and for alert fire drills.
"""

from streamobs.simulator.app import FAULT_HEADER
from streamobs.simulator.config import FAULTS, FORCEABLE_FAULTS, SimulatorConfig
from streamobs.simulator.records import RequestRecord
from streamobs.simulator.server import Simulator

__all__ = [
    "FAULTS",
    "FAULT_HEADER",
    "FORCEABLE_FAULTS",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
]
