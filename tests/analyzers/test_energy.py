"""Energy arithmetic over sampled GPU readings: counter, integration, edges, throttle names."""

from __future__ import annotations

import types

import pytest

from kvcache.analyzers.energy import (
    EnergyWindow,
    GpuSample,
    counter_energy,
    integrate,
    per_unit,
    power_series,
    summarize_window,
    value_at,
    window_slice,
)
from kvcache.analyzers.gpu_throttle import REASON_NAMES, decode_throttle_reasons, is_throttled, reason_names_from, snake


def samples_every(step: float, until: float, *, watts=lambda t: 300.0, mj=lambda t: 5_000_000 + 300_000 * t, **kw):
    """Samples at 0, step, 2*step, ... until; power and counter as functions of time."""
    n = round(until / step)
    out = []
    for i in range(n + 1):
        t = i * step
        energy = mj(t)
        out.append(GpuSample(t=t, power_w=watts(t), energy_mj=None if energy is None else round(energy), **kw))
    return out


# --- interpolation and integration ---------------------------------------------


def test_value_at_interpolates_and_clamps():
    series = [(1.0, 10.0), (2.0, 30.0)]
    assert value_at(series, 1.5) == 20.0
    assert value_at(series, 0.0) == 10.0  # before the first point: clamped
    assert value_at(series, 9.0) == 30.0  # after the last point: clamped


def test_integrate_constant_and_ramp_with_edges_between_samples():
    flat = [(t / 10, 300.0) for t in range(31)]
    assert integrate(flat, 0.05, 2.05) == pytest.approx(600.0)
    # A ramp P = 100 t: the trapezoid rule is exact, including the interpolated edges.
    ramp = [(t / 10, 100.0 * t / 10) for t in range(31)]
    assert integrate(ramp, 0.25, 1.75) == pytest.approx(50.0 * (1.75**2 - 0.25**2))
    assert integrate(ramp, 1.0, 1.0) == 0.0


def test_integrate_clamps_past_the_samples():
    # One reading only: it stands for the whole window.
    assert integrate([(1.0, 200.0)], 0.0, 3.0) == pytest.approx(600.0)


def test_window_slice_keeps_one_neighbour_each_side():
    samples = samples_every(0.5, 5.0)
    got = [s.t for s in window_slice(samples, 1.2, 2.2)]
    assert got == [1.0, 1.5, 2.0, 2.5]
    assert [s.t for s in window_slice(samples, 1.0, 2.0)] == [0.5, 1.0, 1.5, 2.0, 2.5]


# --- the energy counter -----------------------------------------------------------


def test_counter_over_2s_equals_counter_difference():
    samples = samples_every(0.1, 3.0, watts=lambda t: 250.0)  # power reads low on purpose
    w = summarize_window(samples, 0.5, 2.5)
    assert w.method == "counter"
    assert w.energy_j == pytest.approx((samples[25].energy_mj - samples[5].energy_mj) / 1000)
    assert w.energy_j == pytest.approx(600.0)
    assert w.integrated_j == pytest.approx(500.0)  # computed as a cross-check, not used
    assert w.avg_power_w == pytest.approx(300.0)


def test_counter_edges_interpolated_between_samples():
    samples = samples_every(1.0, 4.0)  # a sample a second, counter 300 W
    joules, why = counter_energy(samples, 0.5, 2.5)
    assert why is None
    assert joules == pytest.approx(600.0)


def test_counter_needs_one_second():
    samples = samples_every(0.1, 3.0, watts=lambda t: 100.0)
    assert summarize_window(samples, 0.0, 1.0).method == "counter"  # exactly 1 s is enough
    short = summarize_window(samples, 0.0, 0.9)
    assert short.method == "integrated"
    assert short.energy_j == pytest.approx(90.0)
    assert "under 1 s" in short.note


def test_counter_that_does_not_move_falls_back_to_integration():
    samples = samples_every(0.1, 2.0, mj=lambda t: 7_000_000)
    w = summarize_window(samples, 0.0, 2.0)
    assert (w.method, w.counter_j) == ("integrated", None)
    assert w.energy_j == pytest.approx(600.0, rel=1e-9)
    assert w.note == "energy counter did not move"


def test_counter_going_backwards_falls_back_to_integration():
    # The counter resets at t = 1 s (driver reload): it drops, then climbs again.
    samples = samples_every(0.1, 2.0, mj=lambda t: 300_000 * t if t < 1.0 else 300_000 * (t - 1.0))
    w = summarize_window(samples, 0.0, 2.0)
    assert w.method == "integrated"
    assert "backwards" in w.note
    assert w.energy_j == pytest.approx(600.0)


def test_counter_skips_samples_whose_read_failed():
    samples = samples_every(0.1, 2.0)
    for s in samples[3:8]:
        s.energy_mj = None
    w = summarize_window(samples, 0.0, 2.0)
    assert w.method == "counter"
    assert w.energy_j == pytest.approx(600.0)


def test_no_counter_at_all_integrates():
    samples = samples_every(0.1, 2.0, mj=lambda t: None)
    w = summarize_window(samples, 0.0, 2.0)
    assert (w.method, w.note) == ("integrated", "energy counter not available")
    assert w.energy_j == pytest.approx(600.0)


def test_no_power_at_all_measures_nothing():
    samples = [GpuSample(t=t / 10) for t in range(21)]
    w = summarize_window(samples, 0.0, 2.0)
    assert (w.energy_j, w.method, w.avg_power_w) == (None, None, None)
    assert w.note == "no power readings in the window"
    assert w.seconds == 2.0


# --- which power is integrated -------------------------------------------------------


def test_instant_power_preferred_only_when_every_sample_has_it():
    samples = samples_every(0.1, 1.0, mj=lambda t: None)
    for s in samples:
        s.power_instant_w = 320.0
    series, which = power_series(samples)
    assert which == "instant" and series[0][1] == 320.0
    assert summarize_window(samples, 0.0, 0.5).energy_j == pytest.approx(160.0)
    samples[4].power_instant_w = None
    assert power_series(samples)[1] == "average"
    assert summarize_window(samples, 0.0, 0.5).energy_j == pytest.approx(150.0)


# --- clocks, throttle reasons, per unit ---------------------------------------------


def test_window_stats_leave_out_the_sample_before_the_start():
    samples = samples_every(0.5, 3.0, throttle_reasons=0)
    samples[0].throttle_reasons = 0x1  # idle before the work: outside the window
    samples[0].sm_clock_mhz = 345
    samples[3].throttle_reasons = 0x4  # power cap
    samples[4].throttle_reasons = 0x40  # thermal
    for s, mhz in zip(samples[1:], (1980, 1980, 1755, 1700, 1980, 1980)):
        s.sm_clock_mhz = mhz
    samples[2].power_w = 700.0
    w = summarize_window(samples, 0.3, 3.0)
    assert w.throttle_mask == 0x44
    assert w.throttle_reasons == ["sw_power_cap", "hw_thermal_slowdown"]
    assert w.throttled is True
    assert w.sm_clock_mhz == 1980.0
    assert w.peak_power_w == 700.0


def test_decode_throttle_reasons():
    assert decode_throttle_reasons(0) == []
    names = decode_throttle_reasons(0x1 | 0x80 | 0x100)
    assert names == ["gpu_idle", "hw_power_brake_slowdown", "display_clock_setting"]
    assert decode_throttle_reasons(0x8000) == ["unknown_0x8000"]
    assert decode_throttle_reasons(0x3, {1: "a", 2: "b"}) == ["a", "b"]
    assert not is_throttled(0x1 | 0x2 | 0x10 | 0x100)  # idle, app clocks, sync boost, display
    assert all(is_throttled(bit) for bit in (0x4, 0x8, 0x20, 0x40, 0x80))


def test_reason_names_from_a_module():
    old = types.ModuleType("pynvml")
    old.nvmlClocksThrottleReasonSwPowerCap = 0x4
    old.nvmlClocksThrottleReasonAll = 0x1FF  # a union, not a bit
    old.nvmlClocksThrottleReasonNone = 0
    old.nvmlClocksThrottleReasonBrandNewCause = 0x1000
    names = reason_names_from(old)
    assert names[0x4] == "sw_power_cap"
    assert names[0x1000] == "brand_new_cause"
    assert names[0x40] == "hw_thermal_slowdown"  # the built-in table fills the gaps
    assert 0x1FF not in names
    assert snake("HwPowerBrakeSlowdown") == "hw_power_brake_slowdown"


def test_reason_names_match_the_installed_pynvml():
    pynvml = pytest.importorskip("pynvml")
    assert reason_names_from(pynvml) == REASON_NAMES


def test_per_unit():
    w = summarize_window(samples_every(0.1, 2.0), 0.0, 2.0)
    assert per_unit(w, 1200) == pytest.approx(0.5)
    assert w.per_unit(600) == pytest.approx(1.0)
    assert per_unit(EnergyWindow(start=0.0, end=1.0, seconds=1.0), 10) is None
    with pytest.raises(ValueError, match="positive"):
        per_unit(w, 0)


def test_to_dict_leaves_samples_out_unless_asked():
    w = summarize_window(samples_every(0.5, 2.0), 0.0, 2.0)
    d = w.to_dict()
    assert "samples" not in d and d["n_samples"] == 5 and d["method"] == "counter"
    assert w.to_dict(samples=True)["samples"][0]["energy_mj"] == 5_000_000


def test_window_that_ends_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="before it starts"):
        summarize_window([], 2.0, 1.0)
