"""The benchmark sweep: for each shape, check every implementation, then time it.

Per shape::

    build_case ─► oracle on the checked rows (float64)
               ─► each implementation: one call, max rel err vs the oracle
                    failed (error above tolerance, or it raised) ─► reported, not timed
               ─► timed: CPU round-robin over the passing ones; CUDA events one by one
                  (decode from a CUDA graph where the call can be captured)
               ─► energy (only with a monitor): each one repeated for >= energy_s
                  inside one monitor window

Torch only. The power monitor is duck-typed (``.available`` and ``.window()``
yielding an object with ``energy_j``), so the CLI can hand in the NVML monitor
from ``kvcache.analyzers`` without this layer importing it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .bench_cases import TOLERANCE, BenchShape, build_case, max_rel_err, reference_rows
from .bench_impls import DEFAULT_IMPLS, PagedFn, make_runner, skip_reason
from .timing import (
    Timing,
    capture_cuda_graph,
    l2_flush_buffer,
    measure_copy,
    measure_matmul,
    synchronize,
    time_cuda,
    time_round_robin,
)

# Tests (and people trying a kernel) register more implementations here:
# name -> paged-attention callable taking kvcache.kernels.paged_attention's arguments.
EXTRA_IMPLS: dict[str, PagedFn] = {}


@dataclass(slots=True)
class BenchConfig:
    """What to run. ``impls`` None means every default implementation plus ``EXTRA_IMPLS``."""

    shapes: list[BenchShape]
    device: str = "cpu"
    impls: list[str] | None = None
    warmup: int = 2
    repeat: int = 10
    refcheck: bool = True
    seed: int = 0
    copy_mib: int = 256
    matmul_n: int = 1024
    matmul_dtype: str = "float32"
    cuda_graphs: bool = True
    energy_s: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeat < 1:
            raise ValueError(f"need warmup >= 0 and repeat >= 1, got {self.warmup} and {self.repeat}")
        if self.copy_mib < 1 or self.matmul_n < 1:
            raise ValueError("copy_mib and matmul_n must be at least 1")


@dataclass(slots=True)
class ImplResult:
    """One implementation on one shape. ``status``: ok, failed or skipped."""

    shape: BenchShape
    impl: str
    status: str
    timing: Timing | None = None
    max_rel_err: float | None = None
    cuda_graph: bool = False
    notes: list[str] = field(default_factory=list)
    energy_window: Any = None  # the monitor's EnergyWindow, when measured
    energy_steps: int = 0  # calls inside energy_window

    def as_row(self) -> dict[str, Any]:
        """Plain fields for the report: the shape, ms timings, sizes, and the raw energy window."""
        s, t = self.shape, self.timing
        return {
            "op": s.op, "impl": self.impl, "batch": s.batch, "context": s.context,
            "block_size": s.block_size, "heads_q": s.heads_q, "heads_kv": s.heads_kv,
            "head_dim": s.head_dim, "dtype": s.dtype, "q_len": s.q_len, "status": self.status,
            "median_ms": None if t is None else t.median * 1e3,
            "p20_ms": None if t is None else t.p20 * 1e3,
            "p80_ms": None if t is None else t.p80 * 1e3,
            "max_rel_err": self.max_rel_err, "bytes_moved": s.bytes_moved, "flops": s.flops,
            "tokens": s.tokens, "cuda_graph": self.cuda_graph, "notes": list(self.notes),
            "energy_window": self.energy_window, "energy_steps": self.energy_steps,
        }


def implementation_names(config: BenchConfig, extra_impls: dict[str, PagedFn]) -> list[str]:
    names = list(config.impls) if config.impls is not None else [*DEFAULT_IMPLS, *extra_impls]
    return list(dict.fromkeys(names))


def measure_ceiling(config: BenchConfig) -> dict[str, Any]:
    """The copy bandwidth and matmul peak of this device, in this run."""
    return {**measure_copy(config.device, config.copy_mib, config.warmup, config.repeat),
            **measure_matmul(config.device, config.matmul_dtype, config.matmul_n, config.warmup,
                             config.repeat)}


def run_shape(
    shape: BenchShape,
    names: list[str],
    config: BenchConfig,
    extra_impls: dict[str, PagedFn],
    monitor: Any = None,
    advance: Callable[[int], Any] = lambda n=1: None,
    flush: Any = None,
) -> list[ImplResult]:
    """Check, time and (with a monitor) meter every implementation on one shape."""
    results: list[ImplResult] = []
    runnable = []
    for name in names:
        why = skip_reason(name, shape, config.device, extra_impls)
        if why is None:
            runnable.append(name)
        else:
            results.append(ImplResult(shape, name, "skipped", notes=[why]))
            advance(1)
    order = {name: i for i, name in enumerate(names)}
    if not runnable:
        return results
    case = build_case(shape, config.device, config.seed)
    check = reference_rows(case) if config.refcheck else None
    runners = {}
    for name in runnable:
        res = ImplResult(shape, name, "ok")
        if name == "flex":
            res.notes.append("eager FlexAttention (no torch.compile): materialises the packed scores")
        results.append(res)
        try:
            runner = make_runner(name, case, extra_impls)
            if check is not None:
                res.max_rel_err = max_rel_err(runner, *check)
                tol = TOLERANCE[shape.dtype]
                if not res.max_rel_err <= tol:
                    res.status = "failed"
                    res.notes.append(f"max rel err {res.max_rel_err:.2e} above the {shape.dtype} "
                                     f"tolerance {tol:.1e}; not timed")
            else:
                runner.fn()
        except Exception as e:  # noqa: BLE001 - a broken implementation is a result
            res.status = "failed"
            res.notes.append(f"raised {type(e).__name__}: {e}".splitlines()[0][:300])
        if res.status == "ok":
            runners[name] = runner
        else:
            advance(1)
    by_name = {r.impl: r for r in results}
    cuda = config.device.startswith("cuda")
    if not cuda:
        for name, t in time_round_robin({n: r.fn for n, r in runners.items()}, config.warmup,
                                        config.repeat).items():
            by_name[name].timing = t
    for name, runner in runners.items():
        res = by_name[name]
        fn = runner.fn
        if cuda:
            if config.cuda_graphs and shape.op == "decode":
                replay = capture_cuda_graph(fn)
                if replay is None:
                    res.notes.append("not CUDA-graph capturable (syncs with the host); timed eagerly")
                else:
                    fn, res.cuda_graph = replay, True
            res.timing = time_cuda(fn, config.warmup, config.repeat, flush)
        if monitor is not None and getattr(monitor, "available", False):
            res.energy_window, res.energy_steps = _meter(fn, res.timing, config, monitor)
        advance(1)
    return sorted(results, key=lambda r: order[r.impl])


def _meter(fn: Callable[[], Any], timing: Timing, config: BenchConfig, monitor: Any) -> tuple[Any, int]:
    """Run ``fn`` back to back for at least ``energy_s`` inside one monitor window."""
    steps = max(1, math.ceil(config.energy_s / max(timing.median, 1e-9)))
    synchronize(config.device)
    with monitor.window() as window:
        for _ in range(steps):
            fn()
        synchronize(config.device)
    return window, steps


def run_bench(
    config: BenchConfig,
    monitor: Any = None,
    advance: Callable[[int], Any] = lambda n=1: None,
    extra_impls: dict[str, PagedFn] | None = None,
) -> tuple[dict[str, Any], list[ImplResult]]:
    """The ceiling, then every shape of the sweep.

    Args:
        monitor: an NVML power monitor (``available``, ``window()``), or None.
        advance: called with 1 after each (shape, implementation).
        extra_impls: more implementations; default :data:`EXTRA_IMPLS`.

    Returns:
        ``(ceiling, results)``: copy GB/s and matmul TFLOP/s, and one result
        per shape and implementation, in sweep order.
    """
    extra = EXTRA_IMPLS if extra_impls is None else extra_impls
    names = implementation_names(config, extra)
    # Said once per row instead (see run_shape).
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    ceiling = measure_ceiling(config)
    flush = l2_flush_buffer(config.device) if config.device.startswith("cuda") else None
    results: list[ImplResult] = []
    for shape in config.shapes:
        results.extend(run_shape(shape, names, config, extra, monitor, advance, flush))
    return ceiling, results


def total_steps(config: BenchConfig, extra_impls: dict[str, PagedFn] | None = None) -> int:
    """Progress units of :func:`run_bench`: shapes x implementations."""
    extra = EXTRA_IMPLS if extra_impls is None else extra_impls
    return len(config.shapes) * len(implementation_names(config, extra))
