"""NVML calls for one device: which NVML device a CUDA device is, and one sample's reads.

Every function takes the ``pynvml`` module as an argument, so tests pass a fake
one and importing this module imports neither pynvml nor torch.

CUDA and NVML number devices differently: CUDA (and torch) count only the devices
in ``CUDA_VISIBLE_DEVICES``, in that order, while NVML counts every device on the
machine. The UUID is the same on both sides::

    CUDA_VISIBLE_DEVICES=2,0   torch cuda:0 -> GPU-aaaa...  == NVML index 2
                               torch cuda:1 -> GPU-cccc...  == NVML index 0
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from kvcache.analyzers.energy import GpuSample

FI_DEV_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, milliwatts
_SUCCESS, _NOT_SUPPORTED, _FUNCTION_NOT_FOUND = 0, 3, 13
# nvmlValueType_t -> the member of the c_nvmlValue_t union that holds the value
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


class NoCudaUuid(Exception):
    """The CUDA device's UUID could not be read; ``fallback_ok`` when using the only NVML device is safe."""

    def __init__(self, why: str, *, fallback_ok: bool = True) -> None:
        super().__init__(why)
        self.fallback_ok = fallback_ok


def normalize_uuid(uuid: str | bytes) -> str:
    """``GPU-AbC...`` / ``MIG-...`` / bare -> lower-case hex with dashes, no prefix."""
    text = (uuid.decode() if isinstance(uuid, bytes) else str(uuid)).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def format_cuda_uuid(raw: Any) -> str | None:
    """torch's ``get_device_properties(i).uuid`` as NVML writes it, ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``.

    Accepts torch's ``_CUuuid`` (its ``bytes`` are the 16 raw bytes, its ``str`` the
    dashed hex), raw bytes, or a string with or without the ``GPU-`` prefix.
    """
    if raw is None:
        return None
    raw_bytes = raw if isinstance(raw, (bytes, bytearray)) else getattr(raw, "bytes", None)
    if raw_bytes is not None and len(raw_bytes) == 16:
        hexed = bytes(raw_bytes).hex()
    else:
        hexed = normalize_uuid(raw).replace("-", "")
    if len(hexed) != 32 or any(c not in "0123456789abcdef" for c in hexed):
        return None
    return f"GPU-{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def cuda_device_uuid(cuda_device: int | None) -> tuple[int, str]:
    """``(cuda index, NVML-style UUID)`` of a torch CUDA device; None means the current device.

    Raises:
        NoCudaUuid: torch is missing, has no CUDA, the device does not exist, or gives no UUID.
    """
    try:
        import torch
    except ImportError:
        raise NoCudaUuid("torch is not installed") from None
    try:
        if not torch.cuda.is_available():
            raise NoCudaUuid("torch sees no CUDA device")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if cuda_device is None else cuda_device
        if not 0 <= index < count:
            raise NoCudaUuid(f"cuda:{index} does not exist ({count} CUDA devices visible)", fallback_ok=False)
        uuid = format_cuda_uuid(getattr(torch.cuda.get_device_properties(index), "uuid", None))
    except NoCudaUuid:
        raise
    except Exception as e:  # CUDA init errors surface as RuntimeError and friends
        raise NoCudaUuid(f"torch could not query CUDA: {e}") from None
    if uuid is None:
        raise NoCudaUuid(f"torch gives no UUID for cuda:{index}")
    return index, uuid


def nvml_handle_for_uuid(nvml: ModuleType, uuid: str) -> tuple[Any, int | None] | None:
    """The NVML handle and index of the device with this UUID, or None when no device has it."""
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError:
        pass
    else:
        return handle, _try(nvml, lambda: nvml.nvmlDeviceGetIndex(handle))
    target = normalize_uuid(uuid)
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        if normalize_uuid(_try(nvml, lambda: nvml.nvmlDeviceGetUUID(handle)) or "") == target:
            return handle, index
    return None


def device_info(nvml: ModuleType, handle: Any) -> dict[str, Any]:
    """Name, UUID, driver, limits; a value is None when its call fails."""
    limit_mw = _try(nvml, lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    memory = _try(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    return {
        "name": _text(_try(nvml, lambda: nvml.nvmlDeviceGetName(handle))),
        "uuid": _text(_try(nvml, lambda: nvml.nvmlDeviceGetUUID(handle))),
        "driver": _text(_try(nvml, nvml.nvmlSystemGetDriverVersion)),
        "nvml_index": _try(nvml, lambda: nvml.nvmlDeviceGetIndex(handle)),
        "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        "sm_clock_max_mhz": _try(nvml, lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "memory_total_bytes": None if memory is None else memory.total,
    }


class NvmlReader:
    """Reads one :class:`GpuSample`. A failing call leaves its field None; :meth:`read` never raises.

    ``errors`` keeps the first error of each field. A field whose call says "not
    supported" (or whose function the driver lacks) is not called again.
    """

    def __init__(self, nvml: ModuleType, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self.errors: dict[str, str] = {}
        self._skip: set[str] = set()
        self._event_api = hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")

    def read(self, t: float) -> GpuSample:
        n, h, get = self.nvml, self.handle, self._get
        s = GpuSample(t=t)
        # The counter first: it is the figure most sensitive to when it is read.
        s.energy_mj = get("energy_mj", lambda: n.nvmlDeviceGetTotalEnergyConsumption(h))
        s.power_w = get("power_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0)
        s.power_instant_w = get("power_instant_w", self._instant_power)
        s.sm_clock_mhz = get("sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM))
        s.mem_clock_mhz = get("mem_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM))
        s.throttle_reasons = get("throttle_reasons", self._throttle_reasons)
        util = get("utilization", lambda: n.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            s.gpu_util_pct, s.mem_util_pct = util.gpu, util.memory
        s.mem_used_bytes = get("mem_used_bytes", lambda: n.nvmlDeviceGetMemoryInfo(h).used)
        s.temperature_c = get("temperature_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
        return s

    def _get(self, field: str, call: Callable[[], Any]) -> Any:
        if field in self._skip:
            return None
        try:
            return call()
        except self.nvml.NVMLError as e:
            self.errors.setdefault(field, str(e) or type(e).__name__)
            if getattr(e, "value", None) in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
                self._skip.add(field)
            return None
        except Exception as e:  # a binding quirk must not cost the power reading beside it
            self.errors.setdefault(field, f"{type(e).__name__}: {e}")
            return None

    def _instant_power(self) -> float:
        value = self.nvml.nvmlDeviceGetFieldValues(self.handle, [FI_DEV_POWER_INSTANT])[0]
        if value.nvmlReturn != _SUCCESS:
            raise self.nvml.NVMLError(value.nvmlReturn)
        return getattr(value.value, _VALUE_MEMBER.get(value.valueType, "uiVal")) / 1000.0

    def _throttle_reasons(self) -> int:
        n, h = self.nvml, self.handle
        if self._event_api:
            try:
                return n.nvmlDeviceGetCurrentClocksEventReasons(h)
            except n.NVMLError as e:  # a driver older than the binding: use the older name
                if getattr(e, "value", None) != _FUNCTION_NOT_FOUND:
                    raise
                self._event_api = False
        return n.nvmlDeviceGetCurrentClocksThrottleReasons(h)


def _try(nvml: ModuleType, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except nvml.NVMLError:
        return None


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
