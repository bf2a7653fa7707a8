"""Timers and ceilings for ``kvcache bench``; torch only, imported lazily.

* CPU: ``time.perf_counter`` around each call; :func:`time_round_robin`
  interleaves the implementations of one shape so that a noisy neighbour
  slows every one of them alike.
* CUDA: events around each call, with L2 flushed (a buffer twice the L2 size
  zeroed) before each one, as ``triton.testing.do_bench`` does; decode steps
  can be replayed from a CUDA graph (:func:`capture_cuda_graph`) so launch
  gaps do not count.
* Ceilings: a large ``copy_`` (GB/s counting read + write) and a square
  matmul (TFLOP/s), measured in the same run as the kernels.

Every figure is a median with p20/p80 over ``repeat`` runs after ``warmup``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FLUSH_MIN_BYTES = 256 << 20


@dataclass(slots=True, frozen=True)
class Timing:
    """Seconds per call: median and the 20th/80th percentiles of ``samples``."""

    median: float
    p20: float
    p80: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        if not samples:
            raise ValueError("no timed runs: repeat must be at least 1")
        return cls(statistics.median(samples), quantile(samples, 0.2), quantile(samples, 0.8),
                   tuple(samples))


def quantile(xs: list[float], p: float) -> float:
    """Linear-interpolated quantile (numpy's default), ``0 <= p <= 1``."""
    xs = sorted(xs)
    i = (len(xs) - 1) * p
    lo = int(i)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def time_round_robin(fns: dict[str, Callable[[], Any]], warmup: int, repeat: int) -> dict[str, Timing]:
    """CPU wall time of each callable, interleaved: round i calls every one once."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                samples[name].append(time.perf_counter() - t0)
    return {name: Timing.of(ts) for name, ts in samples.items()}


def l2_flush_buffer(device: Any) -> Any:
    """An int32 buffer at least twice the device's L2 (and >= 256 MiB) to zero between runs."""
    import torch

    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0
    return torch.empty(max(_FLUSH_MIN_BYTES, 2 * l2) // 4, dtype=torch.int32, device=device)


def time_cuda(fn: Callable[[], Any], warmup: int, repeat: int, flush: Any | None = None) -> Timing:
    """GPU time of ``fn`` from CUDA events, with ``flush`` zeroed before each run.

    Events bracket only ``fn``; the flush runs outside them. A host
    synchronisation inside ``fn`` (e.g. ``.tolist()``) is part of its cost.
    """
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    for start, end in zip(starts, ends):
        if flush is not None:
            flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return Timing.of([s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)])


def capture_cuda_graph(fn: Callable[[], Any]) -> Callable[[], Any] | None:
    """``fn`` captured into a CUDA graph, as a replay callable; None if it cannot be.

    A function that synchronises with the host (reads a tensor back, as input
    validation does) cannot be captured: that is detected first with
    ``torch.cuda.set_sync_debug_mode("error")``, before any capture starts.
    """
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the default stream, as capture needs
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError:
        return None
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError:
        torch.cuda.synchronize()
        return None
    return graph.replay


def synchronize(device: str) -> None:
    """Wait for queued device work (a no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: str, warmup: int, repeat: int, flush: Any | None = None) -> Timing:
    """One callable, timed the way ``device`` needs."""
    if device.startswith("cuda"):
        return time_cuda(fn, warmup, repeat, flush)
    return time_round_robin({"fn": fn}, warmup, repeat)["fn"]


def measure_copy(device: str, mib: int, warmup: int, repeat: int) -> dict[str, float]:
    """The bandwidth ceiling: ``dst.copy_(src)`` of ``mib`` MiB; GB/s counts read + write.

    Returns:
        ``copy_gbps`` (from the median), ``copy_p20_gbps``, ``copy_p80_gbps``
        (from the 80th and 20th percentile times), ``copy_mib``, ``copy_median_ms``.
    """
    import torch

    n = mib << 20
    src = torch.ones(n, dtype=torch.uint8, device=device)  # [n]
    dst = torch.empty_like(src)  # [n]
    t = time_fn(lambda: dst.copy_(src), device, warmup, repeat)
    moved = 2 * n / 1e9
    return {"copy_gbps": moved / t.median, "copy_p20_gbps": moved / t.p80,
            "copy_p80_gbps": moved / t.p20, "copy_mib": mib, "copy_median_ms": t.median * 1e3}


def measure_matmul(device: str, dtype: str, n: int, warmup: int, repeat: int) -> dict[str, Any]:
    """A square ``n x n`` matmul in ``dtype``: median TFLOP/s (2 n^3 FLOPs a run)."""
    import torch

    dt = getattr(torch, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device, dtype=dt)  # [n, n]
    b = torch.randn(n, n, generator=gen, device=device, dtype=dt)  # [n, n]
    t = time_fn(lambda: torch.matmul(a, b), device, warmup, repeat)
    return {"matmul_tflops": 2 * n**3 / t.median / 1e12, "matmul_dtype": dtype, "matmul_n": n}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_llc_bytes() -> int | None:
    """Size of the largest CPU cache (the last level) from Linux sysfs, or None."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes) if sizes else None


def device_info(device: str) -> dict[str, Any]:
    """What ran the benchmark: versions, device name and memory, threads."""
    import torch

    info: dict[str, Any] = {
        "device_kind": "cuda" if device.startswith("cuda") else "cpu", "torch": torch.__version__, "cuda": torch.version.cuda, "cpu": cpu_name(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "device": cpu_name(), "device_memory_gb": None,
        "cpu_llc_mib": None if (llc := cpu_llc_bytes()) is None else llc / 2**20,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info["device"] = props.name
        info["device_memory_gb"] = props.total_memory / 1e9
        info["l2_cache_mib"] = (getattr(props, "L2_cache_size", 0) or 0) / 2**20
    return info
