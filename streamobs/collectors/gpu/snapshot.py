"""The GPU collector's core: read every GPU through NVML into an immutable snapshot.

NVML comes from ``nvidia-ml-py`` (module ``pynvml``). This module does one pass over the
devices; ``gpu_sampler.GpuSampler`` runs passes off the scrape path, under a deadline, and
re-initialises NVML with backoff; ``gpu_export.GpuCollector`` turns snapshots into series.

How NVML errors are treated:
- a field the device cannot provide (``NotSupported``, a function the driver lacks) is
  left out, remembered so it is not asked again until NVML is re-initialised, and the rest
  of the device still flows;
- a field failing for a reason that may pass (no permission, no data yet ...) is left out
  of this pass only;
- anything else (``Unknown``, ``GpuIsLost``, ``Uninitialized``, a missing library ...)
  fails the whole pass, so the collector is reported down rather than half right.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamobs.collectors.gpu import names as names

# The pynvml module, or a double with the same functions, classes and constants. pynvml
# ships no type information, so this stays Any.
Nvml = Any

_ERROR_LIMIT = 200
_CMDLINE_LIMIT = 64 * 1024

# Errors meaning "this device cannot give this field": asking again will not help.
_UNSUPPORTED_ERRORS = (
    "NVMLError_NotSupported",
    "NVMLError_FunctionNotFound",
    "NVMLError_ArgumentVersionMismatch",
    "NVMLError_Deprecated",
    # pynvml raises this (not an NVMLError) when an unversioned wrapper finds no function.
    "NVMLLibraryMismatchError",
)
# Errors that concern one field and may pass; the field is skipped for this pass only.
_FIELD_ERRORS = (
    "NVMLError_NoPermission",
    "NVMLError_NotFound",
    "NVMLError_NoData",
    "NVMLError_NotReady",
    "NVMLError_InsufficientSize",
    "NVMLError_InvalidArgument",
    "NVMLError_CorruptedInforom",
    "NVMLError_InsufficientPower",
    "NVMLError_InUse",
    "NVMLError_Timeout",
)


@dataclass(frozen=True, slots=True)
class GpuValue:
    """One sample of one device: ``metric`` is a name from ``gpu_names``; ``labels`` are
    the metric's own labels (e.g. ``reason``), the device labels are added on export."""

    metric: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding device memory. ``served_model`` is a hint from its command line."""

    pid: int
    used_memory_bytes: int
    served_model: bool


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    values: tuple[GpuValue, ...] = ()
    processes: tuple[GpuProcess, ...] = ()

    def value(self, metric: str, **labels: str) -> float | None:
        """The value of ``metric`` with exactly these own labels, or None when absent."""
        wanted = tuple(sorted(labels.items()))
        for item in self.values:
            if item.metric == metric and tuple(sorted(item.labels)) == wanted:
                return item.value
        return None


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """One pass over the GPUs. ``sampled_at`` is wall-clock seconds when it started (0 when
    nothing was sampled yet); ``devices`` is empty when ``up`` is False."""

    up: bool
    error: str | None
    duration_seconds: float
    sampled_at: float
    devices: tuple[GpuDevice, ...] = ()

    def energy_joules_total(self, gpus: Collection[int] | None = None) -> float | None:
        """Energy counter summed over ``gpus`` (indexes; all when None). None when the
        collector is down or any of them has no energy counter, since a partial sum would
        understate the energy."""
        if not self.up:
            return None
        chosen = [d for d in self.devices if gpus is None or d.index in gpus]
        readings = [d.value(names.ENERGY) for d in chosen]
        if not readings or any(r is None for r in readings):
            return None
        return math.fsum(r for r in readings if r is not None)

    def served_model_gpus(self) -> tuple[int, ...]:
        """Indexes of the GPUs on which a process looks like the model server."""
        return tuple(d.index for d in self.devices if any(p.served_model for p in d.processes))


NOT_SAMPLED = GpuSnapshot(up=False, error="not sampled yet", duration_seconds=0.0, sampled_at=0.0)


# -- NVML sessions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceHandle:
    index: int
    uuid: str
    name: str
    handle: object


@dataclass(slots=True)
class NvmlSession:
    """NVML after a successful ``nvmlInit``: the devices, and the (device, call) pairs found
    unsupported, so they are not asked again until the next init."""

    nvml: Nvml
    devices: tuple[DeviceHandle, ...]
    unsupported: set[tuple[int, str, tuple[object, ...]]] = field(default_factory=set)


@dataclass(slots=True)
class Progress:
    """Written by the thread doing NVML work, read by the one waiting for it: which call
    is in flight (to name a hung call), and the module initialised in this pass, if any,
    which owes NVML an ``nvmlShutdown`` should the pass not complete."""

    current: str = ""
    initialised: Nvml | None = None


class CallFailed(Exception):
    """An NVML call failed in a way that fails the whole pass."""

    def __init__(self, where: str, error: BaseException, *, no_library: bool = False) -> None:
        super().__init__(f"{where}: {describe_error(error)}")
        self.where = where
        self.error = error
        self.no_library = no_library


def load_nvml() -> Nvml:
    """The real ``pynvml`` module; a missing package counts as a missing library."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise CallFailed("import pynvml", exc, no_library=True) from exc


def open_session(nvml: Nvml, progress: Progress) -> NvmlSession:
    """``nvmlInit`` and the device list. NVML counts inits, so a failure after the init
    shuts it down again before raising."""
    _call(nvml, progress, "nvmlInit")
    progress.initialised = nvml
    try:
        count = int(_call(nvml, progress, "nvmlDeviceGetCount"))
        devices = []
        for index in range(count):
            handle = _call(nvml, progress, "nvmlDeviceGetHandleByIndex", index)
            uuid = _text(_call(nvml, progress, "nvmlDeviceGetUUID", handle))
            name = _text(_call(nvml, progress, "nvmlDeviceGetName", handle))
            devices.append(DeviceHandle(index, uuid, name, handle))
    except BaseException:
        close_session(nvml, progress)
        progress.initialised = None
        raise
    return NvmlSession(nvml, tuple(devices))


def close_session(nvml: Nvml, progress: Progress) -> None:
    """``nvmlShutdown``, best effort: after a lost GPU it may fail, and that changes nothing."""
    with contextlib.suppress(CallFailed):
        _call(nvml, progress, "nvmlShutdown")


@dataclass(frozen=True, slots=True)
class PassResult:
    devices: tuple[GpuDevice, ...]
    # (GPU index, call) -> error class name, for fields skipped this pass only.
    field_errors: dict[tuple[int, str], str]
    # (GPU index, call) newly found unsupported in this pass.
    unsupported: tuple[tuple[int, str], ...]


def read_devices(
    session: NvmlSession,
    progress: Progress,
    *,
    read_cmdline: Callable[[int], str | None],
    served_model_match: Sequence[str],
) -> PassResult:
    """Read every device once. Raises ``CallFailed`` when the pass as a whole fails."""
    reader = _Reader(session, progress)
    patterns = tuple(p.lower() for p in served_model_match if p)
    devices = tuple(
        _read_device(reader, device, read_cmdline, patterns) for device in session.devices
    )
    return PassResult(devices, dict(reader.field_errors), tuple(reader.new_unsupported))


class _Reader:
    def __init__(self, session: NvmlSession, progress: Progress) -> None:
        self.session = session
        self.nvml = session.nvml
        self.progress = progress
        self.field_errors: dict[tuple[int, str], str] = {}
        self.new_unsupported: list[tuple[int, str]] = []
        self._unsupported_types = _error_types(self.nvml, _UNSUPPORTED_ERRORS)
        self._field_types = _error_types(self.nvml, _FIELD_ERRORS)

    def optional(self, device: DeviceHandle, function: str, *args: object) -> Any:
        """The result of ``function(handle, *args)``, or None when this device does not
        provide it. Errors beyond the field raise ``CallFailed``."""
        key = (device.index, function, args)
        if key in self.session.unsupported:
            return None
        if getattr(self.nvml, function, None) is None:  # an older pynvml without it
            self._unsupported(key)
            return None
        where = f"{function} on GPU {device.index}"
        self.progress.current = where
        try:
            return getattr(self.nvml, function)(device.handle, *args)
        except self._unsupported_types:
            self._unsupported(key)
        except self._field_types as exc:
            self.field_errors[(device.index, function)] = type(exc).__name__
        except Exception as exc:
            raise CallFailed(where, exc, no_library=_is_no_library(self.nvml, exc)) from exc
        return None

    def first(self, device: DeviceHandle, *calls: tuple[str, tuple[object, ...]]) -> Any:
        """The first of several equivalent calls the device answers (newer API first)."""
        for function, args in calls:
            result = self.optional(device, function, *args)
            if result is not None:
                return result
        return None

    def _unsupported(self, key: tuple[int, str, tuple[object, ...]]) -> None:
        self.session.unsupported.add(key)
        self.new_unsupported.append((key[0], key[1]))


def _read_device(
    r: _Reader,
    device: DeviceHandle,
    read_cmdline: Callable[[int], str | None],
    patterns: tuple[str, ...],
) -> GpuDevice:
    nvml = r.nvml
    values: list[GpuValue] = []

    def add(metric: str, value: float, **labels: str) -> None:
        values.append(GpuValue(metric, float(value), tuple(labels.items())))

    utilization = r.optional(device, "nvmlDeviceGetUtilizationRates")
    if utilization is not None:
        add(names.UTILIZATION, utilization.gpu / 100)
        add(names.MEMORY_UTILIZATION, utilization.memory / 100)
    memory = r.optional(device, "nvmlDeviceGetMemoryInfo")
    if memory is not None:
        add(names.MEMORY_USED, memory.used)
        add(names.MEMORY_FREE, memory.free)
        add(names.MEMORY_TOTAL, memory.total)
    _add_scaled(add, names.POWER_USAGE, r.optional(device, "nvmlDeviceGetPowerUsage"), divide=1000)
    limit = r.optional(device, "nvmlDeviceGetEnforcedPowerLimit")
    _add_scaled(add, names.POWER_LIMIT, limit, divide=1000)
    energy = r.optional(device, "nvmlDeviceGetTotalEnergyConsumption")
    _add_scaled(add, names.ENERGY, energy, divide=1000)
    sensor = nvml.NVML_TEMPERATURE_GPU
    # nvmlDeviceGetTemperature is deprecated but answered by every driver in use today;
    # nvmlDeviceGetTemperatureV replaces it once the old one is gone.
    temperature = r.first(
        device,
        ("nvmlDeviceGetTemperature", (sensor,)),
        ("nvmlDeviceGetTemperatureV", (sensor,)),
    )
    _add_scaled(add, names.TEMPERATURE, temperature)
    sm_clock = r.optional(device, "nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM)
    _add_scaled(add, names.SM_CLOCK, sm_clock, multiply=1_000_000)
    memory_clock = r.optional(device, "nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_MEM)
    _add_scaled(add, names.MEMORY_CLOCK, memory_clock, multiply=1_000_000)
    # Drivers before 535 only know the older name of the same bit mask.
    reasons = r.first(
        device,
        ("nvmlDeviceGetCurrentClocksEventReasons", ()),
        ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
    )
    if reasons is not None:
        for reason, constant in names.CLOCK_EVENT_REASONS:
            bit = getattr(nvml, constant, None)
            if bit is not None:
                add(names.CLOCK_EVENT, 1 if int(reasons) & int(bit) else 0, reason=reason)
    # NVML's "KB/s" here is KiB/s, as nvidia-smi's conversion to MB/s shows.
    tx = r.optional(device, "nvmlDeviceGetPcieThroughput", nvml.NVML_PCIE_UTIL_TX_BYTES)
    _add_scaled(add, names.PCIE_TX, tx, multiply=1024)
    rx = r.optional(device, "nvmlDeviceGetPcieThroughput", nvml.NVML_PCIE_UTIL_RX_BYTES)
    _add_scaled(add, names.PCIE_RX, rx, multiply=1024)
    _add_scaled(add, names.FAN_SPEED, r.optional(device, "nvmlDeviceGetFanSpeed"), divide=100)
    _read_memory_health(r, device, add)
    processes = _read_processes(r, device, read_cmdline, patterns)
    return GpuDevice(device.index, device.uuid, device.name, tuple(values), processes)


def _read_memory_health(r: _Reader, device: DeviceHandle, add: Callable[..., None]) -> None:
    nvml = r.nvml
    # Volatile counts (since the driver loaded) are current; aggregate ones lag behind
    # infoROM writes. A driver reload resets them, which rate() treats as a counter reset.
    for error_type, constant in names.ECC_ERROR_TYPES:
        count = r.optional(
            device, "nvmlDeviceGetTotalEccErrors", getattr(nvml, constant), nvml.NVML_VOLATILE_ECC
        )
        if count is not None:
            add(names.ECC_ERRORS, count, error_type=error_type)
    for cause, constant in names.RETIREMENT_CAUSES:
        pages = r.optional(device, "nvmlDeviceGetRetiredPages", getattr(nvml, constant))
        if pages is not None:
            add(names.RETIRED_PAGES, len(pages), cause=cause)
    pending = r.optional(device, "nvmlDeviceGetRetiredPagesPendingStatus")
    if pending is not None:
        add(names.RETIRED_PAGES_PENDING, 1 if pending else 0)
    remapped = r.optional(device, "nvmlDeviceGetRemappedRows")
    if remapped is not None:
        correctable, uncorrectable, is_pending, failure = remapped
        add(names.REMAPPED_ROWS, correctable, cause=names.REMAP_CAUSES[0])
        add(names.REMAPPED_ROWS, uncorrectable, cause=names.REMAP_CAUSES[1])
        add(names.REMAPPED_ROWS_PENDING, 1 if is_pending else 0)
        add(names.REMAPPING_FAILED, 1 if failure else 0)


def _read_processes(
    r: _Reader,
    device: DeviceHandle,
    read_cmdline: Callable[[int], str | None],
    patterns: tuple[str, ...],
) -> tuple[GpuProcess, ...]:
    used: dict[int, int] = {}
    # A process using CUDA and graphics is in both lists with the same memory figure.
    for function in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetGraphicsRunningProcesses",
    ):
        for info in r.optional(device, function) or ():
            if info.usedGpuMemory is None:  # not available (Windows WDDM)
                continue
            pid = int(info.pid)
            used[pid] = max(used.get(pid, 0), int(info.usedGpuMemory))
    processes = []
    for pid in sorted(used):
        r.progress.current = f"reading /proc/{pid}/cmdline"
        cmdline = read_cmdline(pid)
        served = cmdline is not None and any(p in cmdline.lower() for p in patterns)
        processes.append(GpuProcess(pid, used[pid], served))
    return tuple(processes)


def _add_scaled(
    add: Callable[..., None], metric: str, raw: Any, *, multiply: int = 1, divide: int = 1
) -> None:
    # Integer factors and a division keep exact inputs exact: 123456789012 mJ must read
    # 123456789.012 J, which multiplying by 1e-3 does not give.
    if raw is not None:
        add(metric, float(raw) * multiply / divide)


def read_proc_cmdline(pid: int) -> str | None:
    """A process's command line with NULs as spaces, or None when it cannot be read (gone,
    another PID namespace, no permission, a kernel thread). NVML reports PIDs as the
    driver sees them: in a container without the host's PID namespace they may name
    nothing here, so the result is a hint, never an identity."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            raw = file.read(_CMDLINE_LIMIT)
    except OSError:
        return None
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return text or None


# -- errors ----------------------------------------------------------------------------


def _call(nvml: Nvml, progress: Progress, function: str, *args: object) -> Any:
    progress.current = function
    try:
        return getattr(nvml, function)(*args)
    except Exception as exc:
        raise CallFailed(function, exc, no_library=_is_no_library(nvml, exc)) from exc


def _error_types(nvml: Nvml, class_names: Sequence[str]) -> tuple[type[BaseException], ...]:
    found = (getattr(nvml, n, None) for n in class_names)
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


def _is_no_library(nvml: Nvml, error: BaseException) -> bool:
    return isinstance(error, _error_types(nvml, ("NVMLError_LibraryNotFound",)))


def describe_error(error: BaseException) -> str:
    """A short one-line description. NVML errors are named by class (``NVMLError_GpuIsLost``)
    because ``str()`` of an unmapped code calls back into the library."""
    name = type(error).__name__
    if name.startswith("NVMLError"):
        return name
    return _one_line(f"{name}: {error}")


def _one_line(message: str) -> str:
    printable = "".join(c if c.isprintable() else " " for c in message)
    line = " ".join(printable.split())
    return line if len(line) <= _ERROR_LIMIT else line[: _ERROR_LIMIT - 3] + "..."


def _text(value: object) -> str:
    # pynvml decodes to str on Python 3; older releases returned bytes.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
