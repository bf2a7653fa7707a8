"""Names for NVML's clocks event (throttle) reason bits.

NVML reports why the clocks are below their maximum as a bitmask. nvidia-ml-py
names the bits ``nvmlClocksEventReason*`` (current) and ``nvmlClocksThrottleReason*``
(deprecated, the same values). :func:`reason_names_from` reads whichever the
installed module has; :data:`REASON_NAMES` is the same table written out, for
when no module is at hand. Names are snake case: ``SwPowerCap`` -> ``sw_power_cap``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import ModuleType

# Bit values are part of NVML's ABI (nvml.h, nvmlClocksEventReason*).
REASON_NAMES: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",  # only under the deprecated ClocksThrottleReason names
    0x400: "reliability",
}

# Reasons that mean the work ran slower than the clocks allow; the others
# (idle, application clocks, sync boost, display) are settings or states.
SLOWDOWN_REASONS = frozenset(
    {
        "sw_power_cap",
        "hw_slowdown",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
        "board_limit",
        "reliability",
    }
)
SLOWDOWN_MASK = sum(bit for bit, name in REASON_NAMES.items() if name in SLOWDOWN_REASONS)

_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")  # preferred first
_NOT_BITS = {"None", "All", "UserDefinedClocks"}  # no bit, a union, a deprecated alias


def snake(name: str) -> str:
    """``HwPowerBrakeSlowdown`` -> ``hw_power_brake_slowdown``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def reason_names_from(nvml: ModuleType) -> dict[int, str]:
    """Bit -> name from the constants a pynvml module defines; the built-in table for any it lacks."""
    names: dict[int, str] = {}
    for prefix in _PREFIXES:
        for attr in sorted(dir(nvml)):
            suffix = attr[len(prefix) :]
            if not attr.startswith(prefix) or suffix in _NOT_BITS:
                continue
            value = getattr(nvml, attr)
            if isinstance(value, int) and value > 0 and value & (value - 1) == 0:
                names.setdefault(value, snake(suffix))
    for bit, name in REASON_NAMES.items():
        names.setdefault(bit, name)
    return dict(sorted(names.items()))


def decode_throttle_reasons(mask: int, names: Mapping[int, str] | None = None) -> list[str]:
    """Names of the set bits, lowest bit first; a bit with no name shows as ``unknown_0x...``."""
    table = REASON_NAMES if names is None else names
    out = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            out.append(table.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return out


def is_throttled(mask: int) -> bool:
    """True when a power, thermal or hardware slowdown bit is set."""
    return bool(mask & SLOWDOWN_MASK)
