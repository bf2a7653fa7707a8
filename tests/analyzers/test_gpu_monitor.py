"""The NVML monitor against a fake ``pynvml``: sampling, windows, device mapping, null monitor.

The fake devices compute their readings from a controllable clock, and the
tests drive the sampler by hand with ``sample_once()``; only the thread tests
run in real time (a few hundredths of a second).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from kvcache.analyzers.gpu_monitor import NullMonitor, NvmlMonitor, open_monitor
from kvcache.analyzers.gpu_nvml import format_cuda_uuid, nvml_handle_for_uuid

UUIDS = [
    "GPU-00000000-1111-2222-3333-444444444444",
    "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "GPU-12345678-9abc-def0-1234-56789abcdef0",
]
ERRORS = {3: "NotSupported", 6: "NotFound", 9: "DriverNotLoaded", 12: "LibraryNotFound", 13: "FunctionNotFound",
          15: "GpuIsLost"}  # fmt: skip


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeDevice:
    """Readings as functions of time; ``fail[name]`` makes an NVML call raise (an error code or a callable)."""

    def __init__(self, uuid: str, *, watts: Callable[[float], float] = lambda t: 300.0, **kw) -> None:
        self.uuid = uuid
        self.watts = watts
        self.energy_mj: Callable[[float], float] = kw.pop("energy_mj", lambda t: 9_000_000 + 1000 * watts(t) * t)
        self.instant_w: Callable[[float], float] | None = kw.pop("instant_w", None)
        self.throttle: Callable[[float], int] = kw.pop("throttle", lambda t: 0)
        self.fail: dict[str, object] = kw.pop("fail", {})
        self.calls: dict[str, int] = {}
        assert not kw, kw


def make_nvml(devices: list[FakeDevice], clock: Clock, *, init_error: int | None = None) -> types.ModuleType:
    """A stand-in for the ``pynvml`` module with the calls the monitor makes."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __new__(cls, value=None):
            cls = m.__dict__.get(f"NVMLError_{ERRORS.get(value)}", cls) if cls is NVMLError else cls
            obj = Exception.__new__(cls)
            obj.value = value
            return obj

        def __str__(self):
            return f"fake {ERRORS.get(self.value, 'error')}"

    m.NVMLError = NVMLError
    for code, name in ERRORS.items():
        setattr(m, f"NVMLError_{name}", type(f"NVMLError_{name}", (NVMLError,), {"__new__": _fixed_new(code)}))
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.nvmlClocksEventReasonGpuIdle, m.nvmlClocksEventReasonSwPowerCap = 0x1, 0x4
    m.nvmlClocksEventReasonHwThermalSlowdown = 0x40
    m.shutdowns = 0

    def call(name, body):
        def fn(handle, *args):
            handle.calls[name] = handle.calls.get(name, 0) + 1
            failure = handle.fail.get(name)
            if callable(failure):
                failure = failure(clock())
            if isinstance(failure, int):
                raise NVMLError(failure)
            if isinstance(failure, BaseException):
                raise failure
            return body(handle, *args)

        setattr(m, name, fn)

    def init():
        if init_error is not None:
            raise NVMLError(init_error)

    def shutdown():
        m.shutdowns += 1

    def by_uuid(uuid):
        for d in devices:
            if d.uuid == (uuid.decode() if isinstance(uuid, bytes) else uuid):
                return d
        raise NVMLError(6)

    def field_values(h, ids):
        assert ids == [186]
        if h.instant_w is None:
            return [SimpleNamespace(nvmlReturn=3, valueType=1, value=SimpleNamespace(uiVal=0))]
        milliwatts = int(h.instant_w(clock()) * 1000)
        return [SimpleNamespace(nvmlReturn=0, valueType=1, value=SimpleNamespace(uiVal=milliwatts))]

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    m.nvmlDeviceGetHandleByUUID = by_uuid
    m.nvmlSystemGetDriverVersion = lambda: "570.00"
    call("nvmlDeviceGetUUID", lambda h: h.uuid)
    call("nvmlDeviceGetIndex", lambda h: devices.index(h))
    call("nvmlDeviceGetName", lambda h: "Fake H200")
    call("nvmlDeviceGetEnforcedPowerLimit", lambda h: 700_000)
    call("nvmlDeviceGetMaxClockInfo", lambda h, kind: 1980)
    call("nvmlDeviceGetMemoryInfo", lambda h: SimpleNamespace(total=141 << 30, used=(2 << 30)))
    call("nvmlDeviceGetPowerUsage", lambda h: int(h.watts(clock()) * 1000))
    call("nvmlDeviceGetTotalEnergyConsumption", lambda h: int(h.energy_mj(clock())))
    call("nvmlDeviceGetFieldValues", field_values)
    call("nvmlDeviceGetClockInfo", lambda h, kind: {1: 1980, 2: 3201}[kind])
    call("nvmlDeviceGetCurrentClocksEventReasons", lambda h: h.throttle(clock()))
    call("nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: h.throttle(clock()))
    call("nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=97, memory=61))
    call("nvmlDeviceGetTemperature", lambda h, sensor: 55)
    return m


def _fixed_new(code):
    def new(cls, *args):
        obj = Exception.__new__(cls)
        obj.value = code
        return obj

    return new


def run_window(mon: NvmlMonitor, clock: Clock, seconds: float, step: float = 0.1):
    """A window of ``seconds`` on the fake clock, sampled every ``step`` by hand."""
    with mon.window() as w:
        for _ in range(round(seconds / step) - 1):
            clock.t += step
            mon.sample_once()
        clock.t += step
    return w


@pytest.fixture
def clock() -> Clock:
    return Clock()


def monitor(device: FakeDevice, clock: Clock) -> NvmlMonitor:
    return NvmlMonitor(make_nvml([device], clock), device, clock=clock)


# --- energy through the monitor ------------------------------------------------------


def test_energy_by_counter_over_2s_window(clock):
    dev = FakeDevice(UUIDS[0], watts=lambda t: 250.0, energy_mj=lambda t: 9_000_000 + 310_000 * (t - 100))
    w = run_window(monitor(dev, clock), clock, 2.0)
    assert (w.start, w.end, w.seconds) == (100.0, pytest.approx(102.0), pytest.approx(2.0))
    assert w.method == "counter"
    # The window's first and last samples sit exactly on its edges: the counter's difference.
    assert (w.samples[0].t, w.samples[-1].t) == (w.start, w.end)
    assert w.energy_j == (w.samples[-1].energy_mj - w.samples[0].energy_mj) / 1000
    assert w.energy_j == pytest.approx(620.0, abs=0.002)
    assert w.integrated_j == pytest.approx(500.0)


def test_counter_that_does_not_move_integrates_power(clock):
    dev = FakeDevice(UUIDS[0], energy_mj=lambda t: 123_456)
    w = run_window(monitor(dev, clock), clock, 2.0)
    assert w.method == "integrated"
    assert w.energy_j == pytest.approx(600.0, abs=1e-6)
    assert w.avg_power_w == pytest.approx(300.0)


def test_window_under_1s_integrates(clock):
    w = run_window(monitor(FakeDevice(UUIDS[0]), clock), clock, 0.5)
    assert w.method == "integrated"
    assert w.energy_j == pytest.approx(150.0)


def test_counter_decrease_integrates(clock):
    dev = FakeDevice(UUIDS[0], energy_mj=lambda t: 300_000 * ((t - 100) % 1.0))  # resets every second
    w = run_window(monitor(dev, clock), clock, 2.0)
    assert w.method == "integrated" and "backwards" in w.note
    assert w.energy_j == pytest.approx(600.0)


def test_unsupported_energy_call_integrates_and_is_not_called_again(clock):
    dev = FakeDevice(UUIDS[0], fail={"nvmlDeviceGetTotalEnergyConsumption": 3})
    mon = monitor(dev, clock)
    w = run_window(mon, clock, 2.0)
    assert w.method == "integrated" and w.energy_j == pytest.approx(600.0)
    assert all(s.energy_mj is None for s in w.samples)
    assert mon.errors["energy_mj"] == "fake NotSupported"
    assert dev.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_instant_power_unsupported_is_none(clock):
    w = run_window(monitor(FakeDevice(UUIDS[0]), clock), clock, 0.5)
    assert all(s.power_instant_w is None and s.power_w == 300.0 for s in w.samples)
    assert w.power_field == "average"


def test_instant_power_read_and_integrated(clock):
    dev = FakeDevice(UUIDS[0], instant_w=lambda t: 320.0)
    w = run_window(monitor(dev, clock), clock, 0.5)
    assert {s.power_instant_w for s in w.samples} == {320.0}
    assert w.power_field == "instant" and w.energy_j == pytest.approx(160.0)


def test_throttle_bitmask_decoded(clock):
    dev = FakeDevice(UUIDS[0], throttle=lambda t: 0x4 | 0x40 if 100.45 < t < 100.75 else 0)
    w = run_window(monitor(dev, clock), clock, 1.0)
    assert w.throttle_mask == 0x44
    assert w.throttle_reasons == ["sw_power_cap", "hw_thermal_slowdown"]
    assert w.throttled
    assert (w.sm_clock_mhz, w.mem_clock_mhz, w.max_temperature_c) == (1980.0, 3201.0, 55)


def test_throttle_falls_back_to_the_older_call(clock):
    dev = FakeDevice(UUIDS[0], throttle=lambda t: 0x1, fail={"nvmlDeviceGetCurrentClocksEventReasons": 13})
    mon = monitor(dev, clock)
    assert [mon.sample_once().throttle_reasons for _ in range(3)] == [0x1, 0x1, 0x1]
    assert dev.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1
    assert dev.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3
    assert "throttle_reasons" not in mon.errors


def test_window_samples_at_both_edges_without_the_thread(clock):
    mon = monitor(FakeDevice(UUIDS[0]), clock)
    with mon.window() as w:
        clock.t += 0.02  # shorter than a period; no sampler running
    assert [s.t for s in w.samples] == [w.start, w.end]
    assert w.energy_j == pytest.approx(6.0)


def test_window_is_filled_when_the_body_raises(clock):
    mon = monitor(FakeDevice(UUIDS[0]), clock)
    with pytest.raises(RuntimeError, match="boom"), mon.window() as w:
        clock.t += 0.5
        raise RuntimeError("boom")
    assert w.seconds == pytest.approx(0.5) and w.energy_j == pytest.approx(150.0)


def test_nvml_error_on_one_field_keeps_the_others(clock):
    dev = FakeDevice(UUIDS[0], fail={"nvmlDeviceGetClockInfo": lambda t: 15 if t > 100.25 else None})
    mon = monitor(dev, clock)
    w = run_window(mon, clock, 0.5)
    assert [s.sm_clock_mhz for s in w.samples] == [1980, 1980, 1980, None, None, None]
    assert all(s.power_w == 300.0 for s in w.samples)
    assert mon.errors == {
        "sm_clock_mhz": "fake GpuIsLost",
        "mem_clock_mhz": "fake GpuIsLost",
        "power_instant_w": "fake NotSupported",  # this fake has no field 186
    }


# --- the sampler thread (real time) ---------------------------------------------------


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_sampler_survives_errors_mid_run():
    started = time.monotonic()
    dev = FakeDevice(
        UUIDS[0],
        fail={
            "nvmlDeviceGetClockInfo": lambda t: 15 if t > started + 0.03 else None,
            "nvmlDeviceGetTemperature": RuntimeError("not an NVML error"),
        },
    )
    ticks = iter(range(1_000_000))

    def clock() -> float:  # the 3rd reading of the clock fails: a whole sample is lost, not the thread
        if next(ticks) == 2:
            raise OSError("clock hiccup")
        return time.monotonic()

    mon = NvmlMonitor(make_nvml([dev], time.monotonic), dev, period_s=0.005, clock=clock)
    mon.start()
    try:
        wait_for(lambda: sum(s.t > started + 0.03 for s in mon.samples()) >= 5)
        assert mon._thread.is_alive()
    finally:
        mon.stop()
    assert mon._thread is None
    errors = mon.errors
    assert errors["sm_clock_mhz"] == "fake GpuIsLost"
    assert errors["temperature_c"] == "RuntimeError: not an NVML error"
    assert errors["sampler"] == "OSError: clock hiccup"
    assert all(s.temperature_c is None and s.power_w == 300.0 for s in mon.samples())
    late = [s for s in mon.samples() if s.t > started + 0.05]
    assert late and all(s.sm_clock_mhz is None for s in late)
    n = len(mon.samples())
    time.sleep(0.03)
    assert len(mon.samples()) == n  # stopped means stopped


def test_sampler_thread_feeds_windows():
    dev = FakeDevice(UUIDS[0])
    mon = NvmlMonitor(make_nvml([dev], time.monotonic), dev, period_s=0.005)
    mon.start()
    mon.start()  # already running: no second thread
    try:
        with mon.window() as w:
            wait_for(lambda: sum(s.t > w.start for s in mon.samples()) >= 4)
    finally:
        mon.stop()
    times = [s.t for s in w.samples]
    assert times == sorted(times) and len(times) >= 5
    assert times[-1] >= w.end and w.power_field == "average"
    assert sum(t.name == "kvcache-nvml-sampler" for t in threading.enumerate()) == 0


# --- CUDA device -> NVML device -------------------------------------------------------


def test_uuid_lookup_finds_the_reordered_device(clock):
    devices = [FakeDevice(u) for u in UUIDS]
    nvml = make_nvml(devices, clock)
    # CUDA_VISIBLE_DEVICES=2,...: CUDA device 0 is NVML device 2.
    assert nvml_handle_for_uuid(nvml, UUIDS[2]) == (devices[2], 2)
    # Without the by-UUID call working, the handles are searched (case and prefix ignored).
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: (_ for _ in ()).throw(nvml.NVMLError(6))
    assert nvml_handle_for_uuid(nvml, UUIDS[2].upper().removeprefix("GPU-")) == (devices[2], 2)
    assert nvml_handle_for_uuid(nvml, "GPU-99999999-1111-2222-3333-444444444444") is None


def test_format_cuda_uuid():
    raw = bytes.fromhex("aaaaaaaabbbbccccddddeeeeeeeeeeee")
    assert format_cuda_uuid(SimpleNamespace(bytes=list(raw))) == UUIDS[1]  # torch's _CUuuid
    assert format_cuda_uuid("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee") == UUIDS[1]
    assert format_cuda_uuid(UUIDS[1].upper()) == UUIDS[1]
    assert format_cuda_uuid("not-a-uuid") is None
    assert format_cuda_uuid(None) is None


def fake_torch(uuids: list[str] | None) -> types.ModuleType:
    """torch with ``uuids`` as its CUDA devices (None: no CUDA)."""
    torch = types.ModuleType("torch")
    props = [SimpleNamespace(uuid=SimpleNamespace(bytes=bytes.fromhex(u[4:].replace("-", "")))) for u in uuids or []]
    torch.cuda = SimpleNamespace(
        is_available=lambda: uuids is not None,
        device_count=lambda: len(props),
        current_device=lambda: 1,
        get_device_properties=lambda i: props[i],
    )
    return torch


@pytest.fixture
def fake_env(monkeypatch, clock):
    """Install a fake pynvml (and torch); returns the fake NVML module."""

    def install(n_nvml: int, cuda_uuids: list[str] | None, **kw):
        nvml = make_nvml([FakeDevice(u) for u in UUIDS[:n_nvml]], clock, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_uuids))
        return nvml

    return install


def test_open_monitor_maps_cuda_devices_by_uuid(fake_env):
    fake_env(3, [UUIDS[2], UUIDS[0]])  # CUDA_VISIBLE_DEVICES=2,0
    for cuda, nvml_index in ((0, 2), (1, 0), (None, 0)):  # None: torch's current device, cuda:1
        mon = open_monitor(cuda)
        assert mon.available and mon.reason is None
        info = mon.info()
        assert (info["nvml_index"], info["uuid"], info["mapping"]) == (nvml_index, UUIDS[nvml_index], "uuid")
        assert info["cuda_device"] == (1 if cuda is None else cuda)
        assert (info["name"], info["driver"], info["power_limit_w"]) == ("Fake H200", "570.00", 700.0)


def test_open_monitor_without_cuda_uses_the_only_device(fake_env):
    fake_env(1, None)
    mon = open_monitor(0)
    assert mon.available
    assert mon.info()["nvml_index"] == 0
    assert mon.info()["mapping"] == "the only NVML device (torch sees no CUDA device)"


def test_open_monitor_without_cuda_and_several_devices_is_null(fake_env):
    nvml = fake_env(2, None)
    mon = open_monitor(0)
    assert isinstance(mon, NullMonitor)
    assert mon.reason == "no NVML device for cuda:0: torch sees no CUDA device; 2 NVML devices, so none can be assumed"
    assert nvml.shutdowns == 1


def test_open_monitor_unknown_uuid_or_device_is_null(fake_env):
    fake_env(2, [UUIDS[2]])
    assert "none of the 2 NVML devices has its UUID" in open_monitor(0).reason
    assert "cuda:5 does not exist" in open_monitor(5).reason


# --- no NVML ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "why"), [(12, "fake LibraryNotFound"), (9, "fake DriverNotLoaded")], ids=["no-library", "no-driver"]
)
def test_open_monitor_nvml_init_fails(fake_env, code, why):
    fake_env(1, None, init_error=code)
    mon = open_monitor()
    assert isinstance(mon, NullMonitor) and mon.reason == f"NVML not available: {why}"


def test_open_monitor_no_devices_or_no_package(fake_env, monkeypatch):
    fake_env(0, None)
    assert open_monitor().reason == "NVML not available: NVML sees no device"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert open_monitor().reason.startswith("NVML not available: nvidia-ml-py is not installed")


def test_real_pynvml_without_gpu_gives_null_monitor_fast():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML")
    began = time.perf_counter()
    mon = open_monitor(0)
    elapsed = time.perf_counter() - began
    assert isinstance(mon, NullMonitor) and not mon.available
    assert mon.reason.startswith("NVML not available: ")
    assert elapsed < 0.2
    with mon.window() as w:
        time.sleep(0.001)
    assert w.energy_j is None and w.method is None and w.per_unit(10) is None
    assert w.seconds > 0 and w.end == w.start + w.seconds
    assert w.note == f"not measured: {mon.reason}" and mon.info() == {}


def test_open_monitor_rejects_a_bad_period():
    with pytest.raises(ValueError, match="period_s"):
        open_monitor(0, period_s=0)


def test_importing_the_monitor_imports_neither_pynvml_nor_torch():
    code = (
        "import sys, kvcache.analyzers.gpu_monitor as g\n"
        "assert callable(g.open_monitor)\n"
        "print('pynvml' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
