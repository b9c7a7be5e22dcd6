"""`streamobs run` with its GPU collector reading a stand-in for NVML: the benchmarks'
machine has no GPU, and the collector's cost (a pass over every device, its series in
each /metrics) belongs in the scale figures.

python -m benchmarks.nvml_double --gpus 8 run --config streamobs.yml

The stand-in replaces the ``pynvml`` module before the daemon loads it: the driver calls
the collector makes answer for ``--gpus`` cards shaped like an H100 (fans and page
retirement not supported, as on that card), with values that move between passes;
everything else (constants, structs, error classes) is the real module's. Benchmarks do
not import the tests' double, so this one is their own and smaller: no failure scripting.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pynvml

_HANDLE_BASE = 0x5EED0000
_MEMORY_TOTAL = 85_520_809_984
_UNSUPPORTED = frozenset(
    {
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetRetiredPages",
        "nvmlDeviceGetRetiredPagesPendingStatus",
    }
)


class BenchNvml:
    """Stands in for the ``pynvml`` module with ``gpus`` cards."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._initialised = 0
        self._pid = os.getpid()

    def __getattr__(self, name: str) -> Any:
        # A driver function not replaced here would reach for a library that is not there:
        # answer NotSupported, as a driver lacking it would be read by the collector.
        if name.startswith("nvml") and callable(getattr(pynvml, name, None)):
            return self._not_supported
        return getattr(pynvml, name)

    @staticmethod
    def _not_supported(*args: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _index(self, function: str, handle: Any) -> int:
        if not self._initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if function in _UNSUPPORTED:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        index = (ctypes.cast(handle, ctypes.c_void_p).value or 0) - _HANDLE_BASE
        if not 0 <= index < self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def _wave(self, index: int, low: int, high: int) -> int:
        """A value between low and high that changes from one pass to the next."""
        phase = (time.monotonic() - self._started) / 7.0 + index
        return low + int((high - low) * (0.5 + 0.5 * ((phase % 2.0) - 1.0)))

    # -- the functions the GPU collector calls ---------------------------------------
    def nvmlInit(self) -> None:
        with self._lock:
            self._initialised += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            self._initialised = max(0, self._initialised - 1)

    def nvmlDeviceGetCount(self) -> int:
        if not self._initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < self.gpus:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ctypes.cast(ctypes.c_void_p(_HANDLE_BASE + index), pynvml.c_nvmlDevice_t)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._index("nvmlDeviceGetName", handle)
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        index = self._index("nvmlDeviceGetUUID", handle)
        return f"GPU-4a3c2d1e-8f7b-4c6d-9e5a-0b1c2d3e4f{index:02x}"

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        index = self._index("nvmlDeviceGetUtilizationRates", handle)
        gpu = self._wave(index, 60, 99)
        return pynvml.c_nvmlUtilization_t(gpu=gpu, memory=gpu // 2)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        index = self._index("nvmlDeviceGetMemoryInfo", handle)
        used = _MEMORY_TOTAL - 8_000_000_000 + self._wave(index, 0, 100) * 1_000_000
        return pynvml.c_nvmlMemory_t(total=_MEMORY_TOTAL, free=_MEMORY_TOTAL - used, used=used)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._wave(self._index("nvmlDeviceGetPowerUsage", handle), 300_000, 690_000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        self._index("nvmlDeviceGetEnforcedPowerLimit", handle)
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._index("nvmlDeviceGetTotalEnergyConsumption", handle)
        return 123_456_789_012 + int(500_000 * (time.monotonic() - self._started))  # 500 W

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return self._wave(self._index("nvmlDeviceGetTemperature", handle), 55, 75)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        self._index("nvmlDeviceGetClockInfo", handle)
        return 1980 if type == pynvml.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self._index("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return int(pynvml.nvmlClocksEventReasonSwPowerCap)

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        return self._wave(self._index("nvmlDeviceGetPcieThroughput", device), 1024, 16_384)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        self._index("nvmlDeviceGetTotalEccErrors", handle)
        return 3 if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else 0

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        self._index("nvmlDeviceGetRemappedRows", device)
        return (2, 0, 0, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._index("nvmlDeviceGetComputeRunningProcesses", handle)
        # The daemon's own pid: a process whose command line can be read (not "served").
        struct = pynvml.c_nvmlProcessInfo_v3_t(
            pid=self._pid,
            usedGpuMemory=76_000_000_000,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )
        return [pynvml.nvmlStructToFriendlyObject(struct)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        self._index("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return []


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    gpus = 8
    if args[:1] == ["--gpus"] and len(args) >= 2 and args[1].isdigit():
        gpus, args = int(args[1]), args[2:]
    sys.modules["pynvml"] = BenchNvml(gpus)  # type: ignore[assignment]

    from streamobs.cli import main as streamobs_main

    return streamobs_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
