"""Energy over a time window from sampled GPU readings. Pure arithmetic, no NVML.

The NVML sampler (:mod:`kvcache.analyzers.gpu_monitor`) appends one
:class:`GpuSample` per period; :func:`summarize_window` turns the samples
around a ``[start, end]`` window into an :class:`EnergyWindow`.

Two ways to get joules, tried in this order::

    counter     E(end) - E(start) of the energy counter (mJ since the driver loaded),
                each edge read by linear interpolation between the samples around it.
                Used only when the window is >= 1 s, the counter moved, and it never
                went backwards (a decrease means a wrap or a driver reload).
    integrated  trapezoid over power (W) in time: the power at each edge interpolated
                (clamped past the first/last sample), the samples inside as they are.

        samples:   s0      s1      s2      s3      s4
                   |-------|-------|-------|-------|
        window:        [start ............... end]
        integrated:    P(start)~s1~s2~s3~P(end)     P(start) between s0 and s1

The counter is the better figure on a long window; it updates coarsely (tens of
ms), so short windows integrate power instead. The instant power reading (NVML
field 186) is integrated when every sample has it, else the averaged reading
(about a 1 s trailing average on Ampere and newer, which lags short bursts).
"""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kvcache.analyzers.gpu_throttle import decode_throttle_reasons, is_throttled

MIN_COUNTER_S = 1.0


@dataclass(slots=True)
class GpuSample:
    """One reading of the device; a field is None when its NVML call failed or is unsupported."""

    t: float  # time.monotonic() seconds, taken just before the reads
    power_w: float | None = None  # nvmlDeviceGetPowerUsage / 1000 (averaged on Ampere+)
    power_instant_w: float | None = None  # field 186, NVML_FI_DEV_POWER_INSTANT
    energy_mj: int | None = None  # nvmlDeviceGetTotalEnergyConsumption
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    throttle_reasons: int | None = None  # bitmask of clocks event (throttle) reasons
    gpu_util_pct: int | None = None
    mem_util_pct: int | None = None
    mem_used_bytes: int | None = None
    temperature_c: int | None = None


@dataclass(slots=True)
class EnergyWindow:
    """Figures for one timed window; filled in when the ``with`` block exits.

    ``energy_j`` is None when nothing was measured (null monitor, no power readings);
    ``note`` then says why, and also says why the counter was not used.
    """

    start: float
    end: float | None = None
    seconds: float | None = None
    energy_j: float | None = None
    method: str | None = None  # "counter" | "integrated" | None
    avg_power_w: float | None = None
    samples: list[GpuSample] = field(default_factory=list)
    throttle_reasons: list[str] = field(default_factory=list)
    throttle_mask: int | None = None
    throttled: bool = False  # a power, thermal or hardware slowdown reason was seen
    sm_clock_mhz: float | None = None  # median
    mem_clock_mhz: float | None = None  # median
    peak_power_w: float | None = None
    max_temperature_c: int | None = None
    counter_j: float | None = None  # the counter's figure, when usable
    integrated_j: float | None = None  # the integrated figure, when any power was read
    power_field: str | None = None  # "instant" | "average": what was integrated
    note: str | None = None

    def per_unit(self, units: float) -> float | None:
        """Joules per token/step; see :func:`per_unit`."""
        return per_unit(self, units)

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """JSON-ready figures; the raw samples only when asked for."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "samples"}
        out["n_samples"] = len(self.samples)
        if samples:
            out["samples"] = [asdict(s) for s in self.samples]
        return out


def per_unit(window: EnergyWindow, units: float) -> float | None:
    """Energy per unit of work (J per token, per step), or None when energy was not measured.

    Raises:
        ValueError: ``units`` is not positive.
    """
    if units <= 0:
        raise ValueError(f"per_unit needs a positive number of units, got {units!r}")
    return None if window.energy_j is None else window.energy_j / units


def window_slice(samples: Sequence[GpuSample], start: float, end: float) -> list[GpuSample]:
    """Samples inside ``[start, end]`` plus the nearest one outside on each side (for interpolation)."""
    times = [s.t for s in samples]
    lo = max(bisect_left(times, start) - 1, 0)
    hi = min(bisect_right(times, end) + 1, len(samples))
    return list(samples[lo:hi])


def value_at(series: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation in a time-sorted ``(t, value)`` series, clamped past its ends."""
    assert series, "value_at needs at least one point"
    if t <= series[0][0]:
        return series[0][1]
    if t >= series[-1][0]:
        return series[-1][1]
    i = bisect_right([p[0] for p in series], t)
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def integrate(series: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Trapezoid integral of a ``(t, value)`` series over ``[start, end]``; edges interpolated/clamped."""
    if end <= start:
        return 0.0
    points = [(start, value_at(series, start))]
    points += [p for p in series if start < p[0] < end]
    points.append((end, value_at(series, end)))
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(points, points[1:]))


def counter_energy(
    samples: Sequence[GpuSample], start: float, end: float, *, min_seconds: float = MIN_COUNTER_S
) -> tuple[float | None, str | None]:
    """Joules from the energy counter, or ``(None, why not)``."""
    series = [(s.t, float(s.energy_mj)) for s in samples if s.energy_mj is not None]
    if len(series) < 2:
        return None, "energy counter not available"
    if any(b[1] < a[1] for a, b in zip(series, series[1:])):
        return None, "energy counter went backwards (wrap or driver reload)"
    if end - start < min_seconds:
        return None, f"window {end - start:.3f} s is under {min_seconds:g} s, too short for the energy counter"
    moved_mj = value_at(series, end) - value_at(series, start)
    if moved_mj <= 0:
        return None, "energy counter did not move"
    return moved_mj / 1000.0, None


def power_series(samples: Sequence[GpuSample]) -> tuple[list[tuple[float, float]], str | None]:
    """The power readings to integrate: instant when every sample has it, else the averaged reading."""
    instant = [(s.t, s.power_instant_w) for s in samples if s.power_instant_w is not None]
    average = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if instant and len(instant) == len(samples):
        return instant, "instant"  # type: ignore[return-value]
    if average:
        return average, "average"  # type: ignore[return-value]
    if instant:
        return instant, "instant"  # type: ignore[return-value]
    return [], None


def summarize_window(
    samples: Sequence[GpuSample],
    start: float,
    end: float,
    *,
    min_counter_s: float = MIN_COUNTER_S,
    reason_names: Mapping[int, str] | None = None,
) -> EnergyWindow:
    """Energy, power, clocks and throttle reasons over ``[start, end]``.

    Args:
        samples: time-sorted samples; those far outside the window are ignored.
        start, end: the window, on the samples' clock (time.monotonic()).
        min_counter_s: shortest window for which the energy counter is trusted.
        reason_names: throttle bit -> name (default: the built-in table).
    """
    if end < start:
        raise ValueError(f"window ends ({end}) before it starts ({start})")
    used = window_slice(samples, start, end)
    w = EnergyWindow(start=start, end=end, seconds=end - start, samples=used)
    series, w.power_field = power_series(used)
    if series:
        w.integrated_j = integrate(series, start, end)
    w.counter_j, why_not = counter_energy(used, start, end, min_seconds=min_counter_s)
    if w.counter_j is not None:
        w.energy_j, w.method = w.counter_j, "counter"
    elif w.integrated_j is not None:
        w.energy_j, w.method, w.note = w.integrated_j, "integrated", why_not
    else:
        w.note = "no power readings in the window"
    if w.energy_j is not None and w.seconds > 0:
        w.avg_power_w = w.energy_j / w.seconds
    elif series:
        w.avg_power_w = value_at(series, start)
    _describe(w, [s for s in used if s.t >= start], reason_names)
    return w


def _describe(w: EnergyWindow, inner: list[GpuSample], reason_names: Mapping[int, str] | None) -> None:
    """Clocks, peak power, temperature and throttle reasons from the samples at/after the start.

    The sample before the start is left out: it may show the idle GPU before the work.
    """
    masks = [s.throttle_reasons for s in inner if s.throttle_reasons is not None]
    if masks:
        w.throttle_mask = 0
        for m in masks:
            w.throttle_mask |= m
        w.throttle_reasons = decode_throttle_reasons(w.throttle_mask, reason_names)
        w.throttled = is_throttled(w.throttle_mask)
    w.sm_clock_mhz = _median([s.sm_clock_mhz for s in inner])
    w.mem_clock_mhz = _median([s.mem_clock_mhz for s in inner])
    powers = [p for s in inner for p in (s.power_instant_w, s.power_w) if p is not None]
    w.peak_power_w = max(powers, default=None)
    w.max_temperature_c = max((s.temperature_c for s in inner if s.temperature_c is not None), default=None)


def _median(values: list[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None
