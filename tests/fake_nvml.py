"""A test double of the ``pynvml`` module (``nvidia-ml-py``) that needs no GPU or driver.

It reuses the real module for everything that does not talk to the driver: constants,
structs (``c_nvmlMemory_t``, ``c_nvmlUtilization_t``, ``c_nvmlProcessInfo_v3_t``), the
``NVMLError`` hierarchy with its codes, ``NVMLLibraryMismatchError`` and the handle type
``c_nvmlDevice_t``; attribute lookups fall through to it, so nothing can drift. Only the
functions below are replaced, with the real signatures (a test compares them), returning
what the real wrappers return (structs, friendly objects, decoded strings, plain ints) and
raising what they raise: ``NVMLError(code)``, which picks the subclass, exactly as
``_nvmlCheckReturn`` does.

Scripting: ``FakeGpu`` describes a card; ``unsupported`` names the functions it answers
``NotSupported``; ``missing`` the functions the "driver" lacks (``FunctionNotFound``, or
``NVMLLibraryMismatchError`` through the unversioned process wrappers, as the real ones
do). ``fail()`` injects an error code, ``hang()`` blocks a call until released.
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pynvml  # type: ignore[import-untyped,unused-ignore]

_HANDLE_BASE = 0x5EED0000
_HANG_LIMIT = 30.0  # a forgotten release must not hang the test run


@dataclass
class FakeGpu:
    name: str
    uuid: str
    memory_total: int
    memory_used: int
    utilization_gpu: int = 0  # percent
    utilization_memory: int = 0  # percent
    power_mw: int = 0
    power_limit_mw: int = 0
    energy_mj: int = 0
    temperature_c: int = 0
    sm_clock_mhz: int = 0
    memory_clock_mhz: int = 0
    clock_event_reasons: int = 0
    pcie_tx_kib_s: int = 0
    pcie_rx_kib_s: int = 0
    fan_percent: int = 0
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    retired_pages_sbe: tuple[int, ...] = ()
    retired_pages_dbe: tuple[int, ...] = ()
    retired_pages_pending: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    compute_processes: tuple[tuple[int, int | None], ...] = ()  # (pid, used bytes)
    graphics_processes: tuple[tuple[int, int | None], ...] = ()
    unsupported: frozenset[str] = frozenset()


def h100(**changes: Any) -> FakeGpu:
    """A datacenter card: everything but fans (passively cooled) and page retirement
    (replaced by row remapping since Ampere)."""
    base = FakeGpu(
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-4a3c2d1e-8f7b-4c6d-9e5a-0b1c2d3e4f50",
        memory_total=85_520_809_984,
        memory_used=77_309_411_328,
        utilization_gpu=87,
        utilization_memory=41,
        power_mw=512_345,
        power_limit_mw=700_000,
        energy_mj=123_456_789_012,
        temperature_c=64,
        sm_clock_mhz=1980,
        memory_clock_mhz=2619,
        clock_event_reasons=pynvml.nvmlClocksEventReasonSwPowerCap,
        pcie_tx_kib_s=2048,
        pcie_rx_kib_s=10_240,
        ecc_corrected=3,
        ecc_uncorrected=0,
        remapped_rows=(2, 0, 0, 0),
        compute_processes=((4242, 76_000_000_000),),
        unsupported=frozenset(
            {
                "nvmlDeviceGetFanSpeed",
                "nvmlDeviceGetRetiredPages",
                "nvmlDeviceGetRetiredPagesPendingStatus",
            }
        ),
    )
    return dataclasses.replace(base, **changes)


def rtx3050(**changes: Any) -> FakeGpu:
    """A GeForce card: no ECC, no page retirement or row remapping, no energy counter."""
    base = FakeGpu(
        name="NVIDIA GeForce RTX 3050",
        uuid="GPU-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
        memory_total=8_589_934_592,
        memory_used=1_073_741_824,
        utilization_gpu=12,
        utilization_memory=5,
        power_mw=35_250,
        power_limit_mw=130_000,
        temperature_c=48,
        sm_clock_mhz=1777,
        memory_clock_mhz=7001,
        clock_event_reasons=pynvml.nvmlClocksEventReasonGpuIdle,
        pcie_tx_kib_s=0,
        pcie_rx_kib_s=512,
        fan_percent=30,
        compute_processes=((5151, 536_870_912),),
        graphics_processes=((5151, 536_870_912), (2020, 104_857_600)),
        unsupported=frozenset(
            {
                "nvmlDeviceGetTotalEnergyConsumption",
                "nvmlDeviceGetTotalEccErrors",
                "nvmlDeviceGetRetiredPages",
                "nvmlDeviceGetRetiredPagesPendingStatus",
                "nvmlDeviceGetRemappedRows",
            }
        ),
    )
    return dataclasses.replace(base, **changes)


@dataclass
class _Failure:
    code: int
    gpu: int | None
    times: int | None  # None: until healed


@dataclass
class _Hang:
    release: threading.Event
    entered: threading.Event = field(default_factory=threading.Event)


class FakeNvml:
    """Stands in for the ``pynvml`` module; pass it wherever the module is expected."""

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        library_present: bool = True,
        missing: Iterable[str] = (),
    ) -> None:
        self.gpus = list(gpus)
        self.library_present = library_present
        self.missing = set(missing)
        self.calls: list[str] = []
        self._refcount = 0
        self._failures: dict[str, _Failure] = {}
        self._hangs: dict[str, _Hang] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Constants, structs, error classes: the real module's own objects. A function not
        # replaced here is the real one, which without a driver raises Uninitialized, so
        # code calling it fails loudly instead of passing by accident.
        return getattr(pynvml, name)

    # -- scripting ------------------------------------------------------------------
    def fail(
        self, function: str, code: int, *, gpu: int | None = None, times: int | None = None
    ) -> None:
        """Make ``function`` (on ``gpu``, or on any) raise ``NVMLError(code)``, ``times``
        times or until ``heal()``."""
        self._failures[function] = _Failure(code, gpu, times)

    def heal(self, function: str | None = None) -> None:
        if function is None:
            self._failures.clear()
        else:
            self._failures.pop(function, None)

    def hang(self, function: str) -> _Hang:
        """Block ``function`` until the returned hang's ``release`` is set."""
        hang = _Hang(threading.Event())
        self._hangs[function] = hang
        return hang

    def count(self, function: str) -> int:
        with self._lock:
            return self.calls.count(function)

    @property
    def initialised(self) -> bool:
        return self._refcount > 0

    @property
    def refcount(self) -> int:
        """NVML's count of inits not yet shut down."""
        return self._refcount

    # -- the driver's side ----------------------------------------------------------
    def _enter(self, function: str, handle: object = None) -> FakeGpu | None:
        """Bookkeeping every replaced function starts with, in the order the real library
        checks things: library loaded, initialised, function present, handle valid."""
        with self._lock:
            self.calls.append(function)
        hang = self._hangs.get(function)
        if hang is not None:
            hang.entered.set()
            hang.release.wait(_HANG_LIMIT)
        if function == "nvmlInit":
            if not self.library_present:  # pynvml's _LoadNvmlLibrary
                raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        elif not self.library_present or self._refcount == 0:
            # pynvml's _nvmlGetFunctionPointer without a library, or NVML not initialised.
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if function in self.missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        gpu = self._device(handle) if handle is not None else None
        self._maybe_fail(function, gpu)
        if gpu is not None and function in gpu.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _device(self, handle: object) -> FakeGpu:
        if not isinstance(handle, pynvml.c_nvmlDevice_t):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        address = ctypes.cast(handle, ctypes.c_void_p).value or 0
        index = address - _HANDLE_BASE
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def _maybe_fail(self, function: str, gpu: FakeGpu | None) -> None:
        failure = self._failures.get(function)
        if failure is None:
            return
        if failure.gpu is not None and (gpu is None or self.gpus.index(gpu) != failure.gpu):
            return
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[function]
        raise pynvml.NVMLError(failure.code)

    # -- replaced functions (same names and signatures as pynvml) --------------------
    def nvmlInitWithFlags(self, flags: int) -> None:
        self._enter("nvmlInit")  # recorded and scripted as nvmlInit, whichever is called
        self._refcount += 1

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        # A real c_nvmlDevice_t, never dereferenced: its address names the device.
        return ctypes.cast(ctypes.c_void_p(_HANDLE_BASE + index), pynvml.c_nvmlDevice_t)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        free = gpu.memory_total - gpu.memory_used
        if not version:
            return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=free, used=gpu.memory_used)
        return pynvml.c_nvmlMemory_v2_t(
            version=version, total=gpu.memory_total, reserved=0, free=free, used=gpu.memory_used
        )

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        return self._temperature(gpu, sensor)

    def nvmlDeviceGetTemperatureV(
        self, handle: Any, sensor: int, version: int = pynvml.nvmlTemperature_v1
    ) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperatureV", handle)
        if version != pynvml.nvmlTemperature_v1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        return self._temperature(gpu, sensor)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type == pynvml.NVML_CLOCK_SM:
            return gpu.sm_clock_mhz
        if type == pynvml.NVML_CLOCK_MEM:
            return gpu.memory_clock_mhz
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return gpu.clock_event_reasons

    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        gpu = self._gpu("nvmlDeviceGetPcieThroughput", device)
        if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES:
            return gpu.pcie_tx_kib_s
        if counter == pynvml.NVML_PCIE_UTIL_RX_BYTES:
            return gpu.pcie_rx_kib_s
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetFanSpeed", handle).fan_percent

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        if counterType not in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.ecc_corrected
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return gpu.ecc_uncorrected
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetRetiredPages(self, device: Any, sourceFilter: int) -> list[int]:
        gpu = self._gpu("nvmlDeviceGetRetiredPages", device)
        if sourceFilter == pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS:
            return list(gpu.retired_pages_sbe)
        if sourceFilter == pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR:
            return list(gpu.retired_pages_dbe)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        return self._gpu("nvmlDeviceGetRetiredPagesPendingStatus", device).retired_pages_pending

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        return self._gpu("nvmlDeviceGetRemappedRows", device).remapped_rows

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._versioned("nvmlDeviceGetComputeRunningProcesses", handle)
        return _process_objects(gpu.compute_processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._versioned("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return _process_objects(gpu.graphics_processes)

    # -- helpers --------------------------------------------------------------------
    def _gpu(self, function: str, handle: Any) -> FakeGpu:
        gpu = self._enter(function, handle)
        assert gpu is not None
        return gpu

    def _versioned(self, function: str, handle: Any) -> FakeGpu:
        # pynvml's @throwOnVersionMismatch turns FunctionNotFound into its own error.
        try:
            return self._gpu(function, handle)
        except pynvml.NVMLError_FunctionNotFound:
            raise pynvml.NVMLLibraryMismatchError(
                "Unversioned function called and the pyNVML version does not match the NVML "
                f"lib version. Either use matching pyNVML and NVML lib versions or use a "
                f"versioned function such as {function}_v2"
            ) from None

    @staticmethod
    def _temperature(gpu: FakeGpu, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c


def _process_objects(processes: Iterable[tuple[int, int | None]]) -> list[Any]:
    """What pynvml builds from the C array: friendly objects, N/A memory as None."""
    not_available = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
    out = []
    for pid, used in processes:
        struct = pynvml.c_nvmlProcessInfo_v3_t(
            pid=pid,
            usedGpuMemory=not_available if used is None else used,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )
        obj = pynvml.nvmlStructToFriendlyObject(struct)
        if obj.usedGpuMemory == not_available:
            obj.usedGpuMemory = None
        out.append(obj)
    return out


REPLACED: tuple[str, ...] = tuple(
    name for name in vars(FakeNvml) if name.startswith("nvml") and callable(vars(FakeNvml)[name])
)
