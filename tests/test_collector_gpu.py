"""The GPU collector through a double of pynvml: no library, NotSupported fields, errors
after a good start with re-initialisation and backoff, a hung call, and a golden /metrics
section for a two-GPU box. Set STREAMOBS_UPDATE_GOLDEN=1 to rewrite the golden file."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pynvml  # type: ignore[import-untyped,unused-ignore]
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamobs.collectors.gpu import names as names
from streamobs.collectors.gpu.export import GpuCollector
from streamobs.collectors.gpu.sampler import GpuSampler
from streamobs.collectors.gpu.snapshot import (
    GpuDevice,
    GpuSnapshot,
    GpuValue,
    read_proc_cmdline,
)
from tests.fake_nvml import REPLACED, FakeNvml, h100, rtx3050
from tests.fixtures import require_binary

GOLDEN = Path(__file__).parent / "golden" / "gpu-two-cards.txt"
LOGGERS = ("streamobs.collectors.gpu.sampler", "streamobs.collectors.gpu.export")
CMDLINES = {
    4242: "/usr/bin/python3 -m vllm.entrypoints.openai.api_server --model m",
    5151: "python train.py",
    2020: "/usr/lib/xorg/Xorg :0",
}


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_sampler(nvml: object, clock: FakeClock, **options: object) -> GpuSampler:
    settings: dict[str, object] = {
        "interval": 10.0,
        "deadline": 2.0,
        "backoff_max": 300.0,
        "read_cmdline": CMDLINES.get,
        "clock": clock,
        "wall_clock": lambda: 1_795_635_800.0,
    }
    settings.update(options)
    return GpuSampler(nvml=nvml, **settings)  # type: ignore[arg-type]


def render(sampler: GpuSampler) -> str:
    registry = CollectorRegistry()
    registry.register(GpuCollector(sampler.latest))
    return generate_latest(registry).decode()


def gpu_records(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in LOGGERS and r.levelno >= level]


def device(snapshot: GpuSnapshot, index: int) -> GpuDevice:
    return next(d for d in snapshot.devices if d.index == index)


# -- the double mirrors pynvml ---------------------------------------------------------


@pytest.mark.parametrize("function", REPLACED)
def test_double_has_the_real_signature(function: str) -> None:
    real = inspect.signature(getattr(pynvml, function))
    fake = inspect.signature(getattr(FakeNvml, function))
    fake_parameters = list(fake.parameters.values())[1:]  # without self
    assert [(p.name, p.kind, p.default) for p in fake_parameters] == [
        (p.name, p.kind, p.default) for p in real.parameters.values()
    ]


def test_double_reuses_the_real_classes_and_constants() -> None:
    fake = FakeNvml([h100()])
    assert fake.NVMLError_NotSupported is pynvml.NVMLError_NotSupported
    assert fake.NVML_CLOCK_SM == pynvml.NVML_CLOCK_SM
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(handle, pynvml.c_nvmlDevice_t)
    assert isinstance(fake.nvmlDeviceGetMemoryInfo(handle), pynvml.c_nvmlMemory_t)
    assert isinstance(fake.nvmlDeviceGetUtilizationRates(handle), pynvml.c_nvmlUtilization_t)
    with pytest.raises(pynvml.NVMLError_NotSupported) as raised:
        fake.nvmlDeviceGetFanSpeed(handle)
    assert raised.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


# -- no library ------------------------------------------------------------------------


def test_no_library_with_the_real_pynvml(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no NVIDIA driver is installed (CI, this kind of host), the real module."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    except pynvml.NVMLError as exc:
        pytest.skip(f"an NVIDIA library is installed here ({type(exc).__name__})")
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is installed here")
    caplog.set_level(logging.DEBUG)
    sampler = make_sampler(None, clock)  # None: import the real pynvml
    for _ in range(4):
        snapshot = sampler.sample()
        clock.advance(1000)
    assert not snapshot.up
    assert snapshot.error == "nvmlInit: NVMLError_LibraryNotFound"
    text = render(sampler)
    assert 'streamobs_collector_up{collector="gpu",target=""} 0.0' in text
    assert "streamobs_gpu_utilization_ratio{" not in text
    assert len(gpu_records(caplog, logging.DEBUG)) == 1


def test_no_library_logs_one_line_and_backs_off(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeNvml([h100()], library_present=False)
    sampler = make_sampler(fake, clock, backoff_max=60.0)
    attempts_at = []
    for _ in range(200):  # 200 s in one-second steps
        before = fake.count("nvmlInit")
        sampler.sample()
        if fake.count("nvmlInit") > before:
            attempts_at.append(clock.now - 1000)
        clock.advance(1)
    assert attempts_at == [0, 10, 30, 70, 130, 190]  # 10, 20, 40, then capped at 60
    assert len(gpu_records(caplog, logging.DEBUG)) == 1
    assert "NVML library not found" in gpu_records(caplog)[0]
    assert not sampler.latest().up


# -- a normal box and NotSupported fields ----------------------------------------------


def test_values_per_card_and_absent_unsupported_fields(clock: FakeClock) -> None:
    sampler = make_sampler(FakeNvml([h100(), rtx3050()]), clock)
    snapshot = sampler.sample()
    assert snapshot.up and snapshot.error is None
    datacenter, geforce = device(snapshot, 0), device(snapshot, 1)
    assert (datacenter.name, geforce.uuid) == (
        "NVIDIA H100 80GB HBM3",
        "GPU-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    )
    assert datacenter.value(names.UTILIZATION) == 0.87
    assert datacenter.value(names.POWER_USAGE) == 512.345
    assert datacenter.value(names.POWER_LIMIT) == 700.0
    assert datacenter.value(names.ENERGY) == 123_456_789.012
    assert datacenter.value(names.SM_CLOCK) == 1_980_000_000
    assert datacenter.value(names.PCIE_RX) == 10_240 * 1024
    assert datacenter.value(names.CLOCK_EVENT, reason="sw_power_cap") == 1
    assert datacenter.value(names.CLOCK_EVENT, reason="gpu_idle") == 0
    assert datacenter.value(names.ECC_ERRORS, error_type="corrected") == 3
    assert datacenter.value(names.REMAPPED_ROWS, cause="correctable") == 2
    assert datacenter.value(names.FAN_SPEED) is None  # no fans
    assert datacenter.value(names.RETIRED_PAGES, cause="double_bit_ecc") is None
    # GeForce: no ECC, no retirement or remapping, no energy; the rest flows.
    for metric in (names.ENERGY, names.REMAPPED_ROWS_PENDING, names.RETIRED_PAGES_PENDING):
        assert geforce.value(metric) is None
    assert not [v for v in geforce.values if v.metric == names.ECC_ERRORS]
    assert geforce.value(names.FAN_SPEED) == 0.3
    assert geforce.value(names.MEMORY_FREE) == 8_589_934_592 - 1_073_741_824
    assert geforce.value(names.TEMPERATURE) == 48


def test_processes_merged_and_the_served_model_recognised(clock: FakeClock) -> None:
    snapshot = make_sampler(FakeNvml([h100(), rtx3050()]), clock).sample()
    assert [
        (p.pid, p.used_memory_bytes, p.served_model) for p in device(snapshot, 0).processes
    ] == [(4242, 76_000_000_000, True)]
    # 5151 is in both the compute and the graphics list: one series, not two.
    assert [(p.pid, p.served_model) for p in device(snapshot, 1).processes] == [
        (2020, False),
        (5151, False),
    ]
    assert snapshot.served_model_gpus() == (0,)


def test_process_memory_not_available_is_left_out(clock: FakeClock) -> None:
    fake = FakeNvml([h100(compute_processes=((4242, None), (77, 1024)))])
    snapshot = make_sampler(fake, clock).sample()
    assert [p.pid for p in device(snapshot, 0).processes] == [77]


def test_unsupported_fields_are_not_asked_again(clock: FakeClock) -> None:
    fake = FakeNvml([h100(), rtx3050()])
    sampler = make_sampler(fake, clock)
    sampler.sample()
    assert fake.count("nvmlDeviceGetTotalEnergyConsumption") == 2
    clock.advance(10)
    assert sampler.sample().up
    assert fake.count("nvmlDeviceGetTotalEnergyConsumption") == 3  # only the H100 again
    assert fake.count("nvmlInit") == 1  # NVML initialised once


def test_old_driver_functions_fall_back(clock: FakeClock) -> None:
    fake = FakeNvml(
        [h100()],
        missing={
            "nvmlDeviceGetCurrentClocksEventReasons",  # before driver 535
            "nvmlDeviceGetTemperature",  # after its removal
            "nvmlDeviceGetComputeRunningProcesses",  # pynvml raises its mismatch error
        },
    )
    snapshot = make_sampler(fake, clock).sample()
    assert snapshot.up
    gpu = device(snapshot, 0)
    assert gpu.value(names.CLOCK_EVENT, reason="sw_power_cap") == 1
    assert gpu.value(names.TEMPERATURE) == 64
    assert gpu.processes == ()  # graphics list empty, compute list unavailable
    assert fake.count("nvmlDeviceGetCurrentClocksThrottleReasons") == 1


def test_a_field_error_that_may_pass_skips_the_field_and_is_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeNvml([h100()])
    fake.fail("nvmlDeviceGetComputeRunningProcesses", pynvml.NVML_ERROR_NO_PERMISSION)
    sampler = make_sampler(fake, clock)
    for _ in range(3):
        snapshot = sampler.sample()
        clock.advance(10)
    assert snapshot.up and device(snapshot, 0).processes == ()
    assert device(snapshot, 0).value(names.UTILIZATION) == 0.87
    warnings = gpu_records(caplog, logging.WARNING)
    assert warnings == [
        "GPU 0: nvmlDeviceGetComputeRunningProcesses failed with NVMLError_NoPermission; "
        "skipping it"
    ]
    fake.heal()
    assert device(sampler.sample(), 0).processes != ()
    assert gpu_records(caplog)[-1] == "GPU 0: nvmlDeviceGetComputeRunningProcesses works again"


# -- failures after a good start ---------------------------------------------------------


def test_unknown_error_then_recovery_with_backoff(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeNvml([h100(), rtx3050()])
    sampler = make_sampler(fake, clock)
    assert sampler.sample().up

    clock.advance(10)
    fake.fail("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_UNKNOWN, times=1)
    fake.fail("nvmlInit", pynvml.NVML_ERROR_UNKNOWN, times=2)
    snapshot = sampler.sample()
    assert not snapshot.up and snapshot.devices == ()
    assert snapshot.error == "nvmlDeviceGetUtilizationRates on GPU 0: NVMLError_Unknown"
    text = render(sampler)
    assert 'streamobs_collector_up{collector="gpu",target=""} 0.0' in text
    assert "streamobs_gpu_memory_used_bytes{" not in text  # no stale values while down

    init_at = []
    for _ in range(80):
        clock.advance(1)
        before = fake.count("nvmlInit")
        snapshot = sampler.sample()
        if fake.count("nvmlInit") > before:
            init_at.append(clock.now - 1010)
    assert init_at == [10, 30, 70]  # backoff 10, 20, 40; the third attempt works
    assert snapshot.up and len(snapshot.devices) == 2
    # Every re-initialisation shut the previous session down first: NVML counts inits.
    assert fake.count("nvmlShutdown") == 1
    assert fake.initialised
    logged = gpu_records(caplog)
    assert logged[1:] == [
        "GPU collector down: nvmlDeviceGetUtilizationRates on GPU 0: NVMLError_Unknown; "
        "re-initialising NVML with backoff (next in 10s)",
        "GPU collector down: nvmlInit: NVMLError_Unknown; "
        "re-initialising NVML with backoff (next in 20s)",
        "GPU collector is up again: 2 GPU(s) (0: NVIDIA H100 80GB HBM3, "
        "1: NVIDIA GeForce RTX 3050)",
    ]


def test_gpu_is_lost_reports_down_and_backs_off_to_the_cap(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeNvml([h100(), rtx3050()])
    sampler = make_sampler(fake, clock, backoff_max=100.0)
    assert sampler.sample().up
    fake.fail("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_GPU_IS_LOST, gpu=1)
    clock.advance(10)
    snapshot = sampler.sample()
    assert not snapshot.up
    assert snapshot.error == "nvmlDeviceGetPowerUsage on GPU 1: NVMLError_GpuIsLost"
    init_at = []
    for _ in range(400):
        clock.advance(1)
        before = fake.count("nvmlInit")
        sampler.sample()
        if fake.count("nvmlInit") > before:
            init_at.append(clock.now - 1010)
    assert init_at == [10, 30, 70, 150, 250, 350]  # 10, 20, 40, 80, then 100 each
    assert not sampler.latest().up
    # One line when it went down; the same error again is not news.
    assert len(gpu_records(caplog, logging.WARNING)) == 1


def test_a_hung_call_hits_the_deadline_and_the_scrape_stays_prompt(clock: FakeClock) -> None:
    fake = FakeNvml([h100(), rtx3050()])
    sampler = make_sampler(fake, clock, deadline=0.2)
    assert sampler.sample().up
    hang = fake.hang("nvmlDeviceGetPowerUsage")
    try:
        clock.advance(10)
        started = time.monotonic()
        snapshot = sampler.sample()
        assert time.monotonic() - started < 1.5
        assert hang.entered.is_set()
        assert not snapshot.up
        assert snapshot.error == (
            "sampling did not finish within 0.2s, stuck in nvmlDeviceGetPowerUsage on GPU 0"
        )
        started = time.monotonic()
        text = render(sampler)
        assert time.monotonic() - started < 0.5
        assert 'streamobs_collector_up{collector="gpu",target=""} 0.0' in text

        # Still stuck when the retry is due: no second call into the driver.
        calls = len(fake.calls)
        clock.advance(10)
        snapshot = sampler.sample()
        assert snapshot.error == ("sampling still stuck in nvmlDeviceGetPowerUsage on GPU 0")
        assert len(fake.calls) == calls
    finally:
        hang.release.set()
    _wait_for(lambda: not _nvml_workers())  # the abandoned pass has finished
    clock.advance(1000)
    snapshot = sampler.sample()
    assert snapshot.up, snapshot.error
    assert fake.count("nvmlShutdown") == 1 and fake.count("nvmlInit") == 2


def test_a_hang_after_init_leaves_nvml_inits_balanced(clock: FakeClock) -> None:
    fake = FakeNvml([h100()])
    sampler = make_sampler(fake, clock, deadline=0.2)
    hang = fake.hang("nvmlDeviceGetCount")
    try:
        snapshot = sampler.sample()
        assert snapshot.error == "sampling did not finish within 0.2s, stuck in nvmlDeviceGetCount"
    finally:
        hang.release.set()
    _wait_for(lambda: not _nvml_workers())
    clock.advance(10)
    assert sampler.sample().up
    assert fake.refcount == 1  # the abandoned init was shut down before the next one
    sampler.stop()
    assert fake.refcount == 0


def test_stop_after_a_failure_still_shuts_nvml_down(clock: FakeClock) -> None:
    fake = FakeNvml([h100()])
    sampler = make_sampler(fake, clock)
    assert sampler.sample().up
    fake.fail("nvmlDeviceGetMemoryInfo", pynvml.NVML_ERROR_GPU_IS_LOST)
    clock.advance(10)
    assert not sampler.sample().up
    assert fake.initialised
    sampler.stop()
    assert not fake.initialised


def test_a_hung_init_does_not_block_the_scrape() -> None:
    fake = FakeNvml([h100()])
    hang = fake.hang("nvmlInit")
    sampler = GpuSampler(nvml=fake, interval=0.05, deadline=0.1, read_cmdline=CMDLINES.get)
    try:
        sampler.start()
        assert hang.entered.wait(2)
        started = time.monotonic()
        text = render(sampler)
        assert time.monotonic() - started < 0.5
        assert 'streamobs_collector_up{collector="gpu",target=""} 0.0' in text
        _wait_for(lambda: "stuck in nvmlInit" in (sampler.latest().error or ""))
    finally:
        hang.release.set()
        sampler.stop()


# -- the background thread ---------------------------------------------------------------


def test_start_samples_in_the_background_and_stop_shuts_nvml_down() -> None:
    fake = FakeNvml([h100(), rtx3050()])
    sampler = GpuSampler(nvml=fake, interval=0.02, deadline=1.0, read_cmdline=CMDLINES.get)
    assert sampler.latest().error == "not sampled yet"
    sampler.start()
    try:
        _wait_for(lambda: fake.count("nvmlDeviceGetCount") >= 1 and sampler.latest().up)
        _wait_for(lambda: fake.count("nvmlDeviceGetPowerUsage") >= 6)  # several passes
    finally:
        started = time.monotonic()
        sampler.stop()
    assert time.monotonic() - started < 1.0
    assert not fake.initialised
    assert fake.count("nvmlInit") == 1


# -- the exporter ------------------------------------------------------------------------


def test_collect_never_raises() -> None:
    def broken() -> GpuSnapshot:
        raise RuntimeError("boom")

    for source in (broken, lambda: "not a snapshot"):
        collector = GpuCollector(source)  # type: ignore[arg-type]
        families = {m.name: m for m in collector.collect()}
        assert families["streamobs_collector_up"].samples[0].value == 0.0

    # A value naming no known metric cannot be exported: down, nothing half-exported.
    bad = GpuSnapshot(
        True,
        None,
        0.1,
        0.0,
        (GpuDevice(0, "GPU-x", "x", (GpuValue("streamobs_gpu_nonsense", 1.0),)),),
    )
    families = {m.name: m for m in GpuCollector(lambda: bad).collect()}
    assert families["streamobs_collector_up"].samples[0].value == 0.0
    assert all(not m.samples for n, m in families.items() if n.startswith("streamobs_gpu_"))


def test_describe_does_not_read_the_snapshot() -> None:
    def untouchable() -> GpuSnapshot:
        raise AssertionError("describe() read the snapshot")

    described = {m.name for m in GpuCollector(untouchable).describe()}
    assert "streamobs_gpu_energy_joules" in described  # counters without _total
    assert "streamobs_collector_up" in described


def test_names_table() -> None:
    seen = set()
    for spec in names.GPU_METRICS:
        assert spec.name.startswith("streamobs_gpu_")
        assert spec.name.endswith("_total") == (spec.kind == "counter")
        assert not set(spec.labels) & set(names.DEVICE_LABELS)
        assert spec.name not in seen
        seen.add(spec.name)


def test_every_value_read_is_in_the_table(clock: FakeClock) -> None:
    snapshot = make_sampler(FakeNvml([h100(), rtx3050()]), clock).sample()
    specs = {spec.name: spec for spec in names.GPU_METRICS}
    for gpu in snapshot.devices:
        for value in gpu.values:
            assert {k for k, _ in value.labels} == set(specs[value.metric].labels)


def test_energy_total_needs_every_chosen_gpu(clock: FakeClock) -> None:
    snapshot = make_sampler(FakeNvml([h100(), rtx3050()]), clock).sample()
    assert snapshot.energy_joules_total() is None  # the GeForce has no energy counter
    assert snapshot.energy_joules_total({0}) == 123_456_789.012
    assert GpuSnapshot(False, "down", 0.0, 0.0).energy_joules_total() is None


def test_read_proc_cmdline() -> None:
    own = read_proc_cmdline(os.getpid())
    assert own is not None and "\0" not in own
    assert read_proc_cmdline(0) is None
    assert read_proc_cmdline(2**22 + 12345) is None  # above the kernel's pid_max


# -- golden ----------------------------------------------------------------------------


@pytest.fixture
def golden_text(clock: FakeClock) -> Iterator[str]:
    sampler = make_sampler(FakeNvml([h100(), rtx3050()]), clock)
    assert sampler.sample().up
    yield render(sampler)


def test_golden_two_cards(golden_text: str) -> None:
    if os.environ.get("STREAMOBS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(golden_text, encoding="utf-8")
    assert golden_text == GOLDEN.read_text(encoding="utf-8")


def test_golden_passes_promtool() -> None:
    promtool = require_binary("promtool", "/usr/bin/promtool")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=GOLDEN.read_bytes(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def _nvml_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "streamobs-nvml" and t.is_alive()]


def _wait_for(condition: object, timeout: float = 3.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        threading.Event().wait(0.005)
