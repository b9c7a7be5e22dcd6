"""The one table of the GPU collector's series: names, kinds, labels, units and sources.

Docs and dashboards are generated from ``GPU_METRICS``; the reader (``gpu.py``) and the
exporter (``gpu_export.py``) refer to the same constants, so a name lives in one place.
Every series carries the device labels ``gpu`` (NVML index), ``uuid`` and ``name``; values
are in Prometheus base units (ratios 0..1, bytes, watts, joules, hertz, celsius).
A series NVML cannot provide for a device (``NotSupported``) is absent for that device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]

COLLECTOR_NAME = "gpu"
DEVICE_LABELS: tuple[str, ...] = ("gpu", "uuid", "name")


@dataclass(frozen=True, slots=True)
class GpuMetricSpec:
    """One exposed family. ``name`` is the exposed name (counters end in ``_total``);
    ``labels`` are the family's own labels after the device labels; ``source`` says which
    NVML call feeds it and how the value is converted, for generated documentation."""

    name: str
    kind: Kind
    documentation: str
    source: str
    labels: tuple[str, ...] = ()


UTILIZATION = "streamobs_gpu_utilization_ratio"
MEMORY_UTILIZATION = "streamobs_gpu_memory_utilization_ratio"
MEMORY_USED = "streamobs_gpu_memory_used_bytes"
MEMORY_FREE = "streamobs_gpu_memory_free_bytes"
MEMORY_TOTAL = "streamobs_gpu_memory_total_bytes"
POWER_USAGE = "streamobs_gpu_power_usage_watts"
POWER_LIMIT = "streamobs_gpu_power_limit_watts"
ENERGY = "streamobs_gpu_energy_joules_total"
TEMPERATURE = "streamobs_gpu_temperature_celsius"
SM_CLOCK = "streamobs_gpu_sm_clock_hertz"
MEMORY_CLOCK = "streamobs_gpu_memory_clock_hertz"
CLOCK_EVENT = "streamobs_gpu_clock_event_active"
PCIE_TX = "streamobs_gpu_pcie_tx_bytes_per_second"
PCIE_RX = "streamobs_gpu_pcie_rx_bytes_per_second"
FAN_SPEED = "streamobs_gpu_fan_speed_ratio"
ECC_ERRORS = "streamobs_gpu_ecc_errors_total"
RETIRED_PAGES = "streamobs_gpu_retired_pages"
RETIRED_PAGES_PENDING = "streamobs_gpu_retired_pages_pending"
REMAPPED_ROWS = "streamobs_gpu_remapped_rows"
REMAPPED_ROWS_PENDING = "streamobs_gpu_remapped_rows_pending"
REMAPPING_FAILED = "streamobs_gpu_remapping_failed"
PROCESS_MEMORY = "streamobs_gpu_process_memory_used_bytes"

# Clock-event (formerly "throttle") reasons: the ``reason`` label value and the pynvml
# constant holding its bit. The label set is fixed; bits outside it are ignored.
CLOCK_EVENT_REASONS: tuple[tuple[str, str], ...] = (
    ("gpu_idle", "nvmlClocksEventReasonGpuIdle"),
    ("applications_clocks_setting", "nvmlClocksEventReasonApplicationsClocksSetting"),
    ("sw_power_cap", "nvmlClocksEventReasonSwPowerCap"),
    ("hw_slowdown", "nvmlClocksEventReasonHwSlowdown"),
    ("sync_boost", "nvmlClocksEventReasonSyncBoost"),
    ("sw_thermal_slowdown", "nvmlClocksEventReasonSwThermalSlowdown"),
    ("hw_thermal_slowdown", "nvmlClocksEventReasonHwThermalSlowdown"),
    ("hw_power_brake_slowdown", "nvmlClocksEventReasonHwPowerBrakeSlowdown"),
    ("display_clock_setting", "nvmlClocksEventReasonDisplayClockSetting"),
)

# ``error_type`` label values and the pynvml constants of nvmlDeviceGetTotalEccErrors.
ECC_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED"),
    ("uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED"),
)

# ``cause`` label values and the pynvml constants of nvmlDeviceGetRetiredPages.
RETIREMENT_CAUSES: tuple[tuple[str, str], ...] = (
    ("multiple_single_bit_ecc", "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS"),
    ("double_bit_ecc", "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR"),
)

GPU_METRICS: tuple[GpuMetricSpec, ...] = (
    GpuMetricSpec(
        UTILIZATION,
        "gauge",
        "Share of the last sample period in which a kernel ran on the GPU, 0 to 1.",
        "nvmlDeviceGetUtilizationRates().gpu / 100",
    ),
    GpuMetricSpec(
        MEMORY_UTILIZATION,
        "gauge",
        "Share of the last sample period in which device memory was read or written, 0 to 1 "
        "(bandwidth busy time, not capacity).",
        "nvmlDeviceGetUtilizationRates().memory / 100",
    ),
    GpuMetricSpec(
        MEMORY_USED,
        "gauge",
        "Device memory in use, in bytes.",
        "nvmlDeviceGetMemoryInfo().used",
    ),
    GpuMetricSpec(
        MEMORY_FREE,
        "gauge",
        "Device memory free, in bytes.",
        "nvmlDeviceGetMemoryInfo().free",
    ),
    GpuMetricSpec(
        MEMORY_TOTAL,
        "gauge",
        "Device memory in total, in bytes.",
        "nvmlDeviceGetMemoryInfo().total",
    ),
    GpuMetricSpec(
        POWER_USAGE,
        "gauge",
        "Power drawn by the board, in watts.",
        "nvmlDeviceGetPowerUsage() mW / 1000",
    ),
    GpuMetricSpec(
        POWER_LIMIT,
        "gauge",
        "Power limit the driver enforces, in watts.",
        "nvmlDeviceGetEnforcedPowerLimit() mW / 1000",
    ),
    GpuMetricSpec(
        ENERGY,
        "counter",
        "Energy used by the GPU since the driver was loaded, in joules.",
        "nvmlDeviceGetTotalEnergyConsumption() mJ / 1000",
    ),
    GpuMetricSpec(
        TEMPERATURE,
        "gauge",
        "GPU die temperature, in degrees Celsius.",
        "nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)",
    ),
    GpuMetricSpec(
        SM_CLOCK,
        "gauge",
        "Current SM clock, in hertz.",
        "nvmlDeviceGetClockInfo(NVML_CLOCK_SM) MHz * 1e6",
    ),
    GpuMetricSpec(
        MEMORY_CLOCK,
        "gauge",
        "Current memory clock, in hertz.",
        "nvmlDeviceGetClockInfo(NVML_CLOCK_MEM) MHz * 1e6",
    ),
    GpuMetricSpec(
        CLOCK_EVENT,
        "gauge",
        "1 while this reason is holding the clocks down (clock-event, formerly throttle, "
        "reasons), else 0.",
        "nvmlDeviceGetCurrentClocksEventReasons() bit mask",
        ("reason",),
    ),
    GpuMetricSpec(
        PCIE_TX,
        "gauge",
        "PCIe bytes per second sent by the GPU, measured by NVML over 20 ms.",
        "nvmlDeviceGetPcieThroughput(NVML_PCIE_UTIL_TX_BYTES) KiB/s * 1024",
    ),
    GpuMetricSpec(
        PCIE_RX,
        "gauge",
        "PCIe bytes per second received by the GPU, measured by NVML over 20 ms.",
        "nvmlDeviceGetPcieThroughput(NVML_PCIE_UTIL_RX_BYTES) KiB/s * 1024",
    ),
    GpuMetricSpec(
        FAN_SPEED,
        "gauge",
        "Intended fan speed as a share of the maximum, 0 to 1 (can exceed 1).",
        "nvmlDeviceGetFanSpeed() % / 100",
    ),
    GpuMetricSpec(
        ECC_ERRORS,
        "counter",
        "ECC memory errors since the driver was loaded, by error_type.",
        "nvmlDeviceGetTotalEccErrors(error_type, NVML_VOLATILE_ECC)",
        ("error_type",),
    ),
    GpuMetricSpec(
        RETIRED_PAGES,
        "gauge",
        "Memory pages retired for ECC errors, by cause (pre-Ampere datacenter GPUs).",
        "len(nvmlDeviceGetRetiredPages(cause))",
        ("cause",),
    ),
    GpuMetricSpec(
        RETIRED_PAGES_PENDING,
        "gauge",
        "1 when a page retirement waits for the next driver reload, else 0.",
        "nvmlDeviceGetRetiredPagesPendingStatus()",
    ),
    GpuMetricSpec(
        REMAPPED_ROWS,
        "gauge",
        "Memory rows remapped, by cause (Ampere and newer datacenter GPUs).",
        "nvmlDeviceGetRemappedRows()[0:2]",
        ("cause",),
    ),
    GpuMetricSpec(
        REMAPPED_ROWS_PENDING,
        "gauge",
        "1 when a row remapping waits for a GPU reset, else 0.",
        "nvmlDeviceGetRemappedRows()[2]",
    ),
    GpuMetricSpec(
        REMAPPING_FAILED,
        "gauge",
        "1 when a row remapping has failed (the GPU needs service), else 0.",
        "nvmlDeviceGetRemappedRows()[3]",
    ),
    GpuMetricSpec(
        PROCESS_MEMORY,
        "gauge",
        "Device memory used by a process, in bytes; served_model is 1 when the process's "
        "command line identifies it as the model server.",
        "nvmlDeviceGetComputeRunningProcesses() and nvmlDeviceGetGraphicsRunningProcesses()",
        ("pid", "served_model"),
    ),
)

# ``cause`` label values of streamobs_gpu_remapped_rows, in nvmlDeviceGetRemappedRows order.
REMAP_CAUSES: tuple[str, ...] = ("correctable", "uncorrectable")
