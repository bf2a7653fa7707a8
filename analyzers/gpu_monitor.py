"""GPU power, energy and clocks during timed windows, sampled through NVML.

    mon = open_monitor(cuda_device=0)        # a NullMonitor, with .reason, when NVML is absent
    mon.start()                              # background sampler, every period_s
    with mon.window() as w:
        ...work...; torch.cuda.synchronize()
    mon.stop()
    w.energy_j, w.method, w.avg_power_w, w.sm_clock_mhz, w.throttle_reasons

A window samples once on entry and once on exit, so it has readings at both
edges even when the sampler is not running or the window is shorter than a period.
The arithmetic is in :mod:`kvcache.analyzers.energy`, the NVML calls in
:mod:`kvcache.analyzers.gpu_nvml`. Importing this module imports neither pynvml nor torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Any, Protocol

from kvcache.analyzers.energy import EnergyWindow, GpuSample, per_unit, summarize_window
from kvcache.analyzers.gpu_nvml import NoCudaUuid, NvmlReader, cuda_device_uuid, device_info, nvml_handle_for_uuid
from kvcache.analyzers.gpu_throttle import reason_names_from

__all__ = ["EnergyWindow", "GpuSample", "NullMonitor", "NvmlMonitor", "PowerMonitor", "open_monitor", "per_unit"]

DEFAULT_PERIOD_S = 0.05
MAX_SAMPLES = 200_000  # about 2.8 h at 50 ms; older samples are dropped


class PowerMonitor(Protocol):
    """What ``kvcache bench --gpu`` uses; :class:`NvmlMonitor` and :class:`NullMonitor` implement it."""

    available: bool  # False for the null monitor
    reason: str | None  # why power is not measured; None when available

    def info(self) -> dict[str, Any]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def window(self) -> AbstractContextManager[EnergyWindow]: ...


class NullMonitor:
    """Measures nothing but time: every window has ``energy_j`` None and says why in ``note``."""

    available = False

    def __init__(self, reason: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.reason: str | None = " ".join(reason.split())  # one line
        self._clock = clock

    def info(self) -> dict[str, Any]:
        return {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    @contextmanager
    def window(self) -> Iterator[EnergyWindow]:
        w = EnergyWindow(start=self._clock(), note=f"not measured: {self.reason}")
        try:
            yield w
        finally:
            w.end = self._clock()
            w.seconds = w.end - w.start


class NvmlMonitor:
    """Samples one NVML device on a daemon thread; windows slice the samples by time.

    Args:
        nvml: the ``pynvml`` module, already initialised (``nvmlInit``).
        handle: the device's NVML handle.
        period_s: time between samples.
        clock: the time source of samples and windows (``time.monotonic``).
        info: what :meth:`info` reports about the device.
    """

    available = True
    reason: str | None = None

    def __init__(
        self,
        nvml: ModuleType,
        handle: Any,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
        info: dict[str, Any] | None = None,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        self.period_s = period_s
        self._nvml = nvml
        self._reader = NvmlReader(nvml, handle)
        self._reason_names = reason_names_from(nvml)
        self._clock = clock
        self._info = dict(info or {})
        self._max_samples = max_samples
        self._samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler_error: str | None = None
        self._closed = False

    @property
    def errors(self) -> dict[str, str]:
        """The first error of each field (and of the sampler loop, if it ever failed)."""
        out = dict(self._reader.errors)
        if self._sampler_error:
            out["sampler"] = self._sampler_error
        return out

    def info(self) -> dict[str, Any]:
        return {**self._info, "period_s": self.period_s, "errors": self.errors}

    def samples(self) -> list[GpuSample]:
        """A copy of the samples kept so far, oldest first."""
        with self._lock:
            return list(self._samples)

    def sample_once(self) -> GpuSample:
        """Read the device now and keep the sample (the sampler thread calls this every period)."""
        with self._lock:  # clock and append together, so samples stay in time order
            s = self._reader.read(self._clock())
            self._samples.append(s)
            if len(self._samples) > self._max_samples:
                del self._samples[: len(self._samples) - self._max_samples]
        return s

    def start(self) -> None:
        """Start the sampler thread; does nothing when it already runs."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="kvcache-nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampler thread and wait for it; the samples are kept."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, 10 * self.period_s))
            self._thread = None

    def close(self) -> None:
        """Stop sampling and release NVML (``nvmlShutdown``); the monitor is done after this."""
        self.stop()
        if not self._closed:
            self._closed = True
            _shutdown(self._nvml)

    def __enter__(self) -> NvmlMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def window(self) -> Iterator[EnergyWindow]:
        w = EnergyWindow(start=self._clock())
        self.sample_once()
        try:
            yield w
        finally:
            end = self._clock()
            self.sample_once()  # a reading at/after the end, whatever the sampler's phase
            with self._lock:
                samples = list(self._samples)
            done = summarize_window(samples, w.start, end, reason_names=self._reason_names)
            for name in EnergyWindow.__dataclass_fields__:
                setattr(w, name, getattr(done, name))

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self.sample_once()
            except Exception as e:  # keep sampling; field errors never get here (the reader keeps them)
                self._sampler_error = self._sampler_error or f"{type(e).__name__}: {e}"
            self._stopping.wait(max(0.0, self.period_s - (time.monotonic() - began)))


def open_monitor(cuda_device: int | None = 0, period_s: float = DEFAULT_PERIOD_S) -> PowerMonitor:
    """A monitor of the NVML device behind a torch CUDA device, or a :class:`NullMonitor` saying why not.

    The CUDA device (numbered as torch numbers it, after ``CUDA_VISIBLE_DEVICES``;
    None for torch's current device) is matched to its NVML device by UUID. When
    torch cannot say the UUID (no torch, no CUDA), the only NVML device is used if
    there is exactly one. Never raises for a missing library, driver or device.

    Raises:
        ValueError: ``period_s`` is not positive.
    """
    if not period_s > 0:
        raise ValueError(f"period_s must be positive, got {period_s!r}")
    try:
        import pynvml as nvml
    except ImportError as e:
        return NullMonitor(f"NVML not available: nvidia-ml-py is not installed ({e}); pip install 'kvcache[gpu]'")
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError, OSError) as e:
        return NullMonitor(f"NVML not available: {e}")
    try:
        opened = _open_device(nvml, cuda_device, period_s)
    except nvml.NVMLError as e:
        opened = f"NVML not available: {e}"
    if isinstance(opened, str):
        _shutdown(nvml)
        return NullMonitor(opened)
    return opened


def _open_device(nvml: ModuleType, cuda_device: int | None, period_s: float) -> NvmlMonitor | str:
    """The monitor, or the reason there is none."""
    count = nvml.nvmlDeviceGetCount()
    if count == 0:
        return "NVML not available: NVML sees no device"
    name = "the current CUDA device" if cuda_device is None else f"cuda:{cuda_device}"
    try:
        cuda_index, uuid = cuda_device_uuid(cuda_device)
    except NoCudaUuid as e:
        if not (e.fallback_ok and count == 1):
            return f"no NVML device for {name}: {e}; {count} NVML devices, so none can be assumed"
        handle, index = nvml.nvmlDeviceGetHandleByIndex(0), 0
        cuda_index, mapping = cuda_device, f"the only NVML device ({e})"
    else:
        found = nvml_handle_for_uuid(nvml, uuid)
        if found is None:
            return f"no NVML device for {name}: none of the {count} NVML devices has its UUID {uuid}"
        (handle, index), mapping = found, "uuid"
    info = device_info(nvml, handle)
    if info["nvml_index"] is None:
        info["nvml_index"] = index
    info.update(cuda_device=cuda_index, mapping=mapping)
    return NvmlMonitor(nvml, handle, period_s=period_s, info=info)


def _shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except nvml.NVMLError:
        pass
