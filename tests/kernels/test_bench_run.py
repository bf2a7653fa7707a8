"""The sweep: reference check before timing, failures not timed, energy windows (kernels/bench_run.py)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

torch = pytest.importorskip("torch")

from kvcache import kernels  # noqa: E402
from kvcache.kernels.bench_cases import BenchShape  # noqa: E402
from kvcache.kernels.bench_run import BenchConfig, run_bench, total_steps  # noqa: E402

TINY = dict(warmup=1, repeat=2, copy_mib=1, matmul_n=32)


def shapes(*ops: str) -> list[BenchShape]:
    return [BenchShape(op, 2, ctx, 8, 4, 2, 16, "fp32", 1 if op == "decode" else 4)
            for op in ops for ctx in (16, 24)]


def broken(*args):
    return kernels.paged_attention(*args, impl="torch") * 1.01  # 1% off: far above 1e-5


def raises(*args):
    raise RuntimeError("kernel exploded\nsecond line")


class FakeWindow:
    def __init__(self) -> None:
        self.seconds, self.energy_j, self.method = 1.0, 50.0, "fake"
        self.avg_power_w, self.sm_clock_mhz, self.throttle_reasons = 50.0, 1980, ["none"]


class FakeMonitor:
    available, reason = True, None

    def __init__(self) -> None:
        self.windows = 0

    @contextmanager
    def window(self):
        self.windows += 1
        yield FakeWindow()


def test_sweep_checks_times_and_orders_results():
    config = BenchConfig(shapes("decode", "prefill"), **TINY)
    ceiling, results = run_bench(config, extra_impls={})
    assert ceiling["copy_gbps"] > 0 and ceiling["matmul_tflops"] > 0
    assert len(results) == total_steps(config, {}) == 4 * 6
    first = [r.impl for r in results[:6]]
    assert first == ["torch", "triton", "flashinfer", "flash_attn", "dense_sdpa", "dense_grouped"]
    by = {r.impl: r for r in results[:6]}
    assert by["triton"].status == "skipped" and "TRITON_INTERPRET" in by["triton"].notes[0]
    for name in ("torch", "dense_sdpa", "dense_grouped"):
        r = by[name]
        assert r.status == "ok" and r.max_rel_err <= 1e-5 and len(r.timing.samples) == 2
        assert r.energy_window is None


def test_a_wrong_implementation_fails_and_is_not_timed():
    config = BenchConfig(shapes("decode"), impls=["torch", "broken", "raises"], **TINY)
    _, results = run_bench(config, extra_impls={"broken": broken, "raises": raises})
    by = {(r.impl, r.shape.context): r for r in results}
    for ctx in (16, 24):
        assert by[("torch", ctx)].status == "ok"
        bad = by[("broken", ctx)]
        assert bad.status == "failed" and bad.timing is None
        assert bad.max_rel_err > 1e-3 and "tolerance" in bad.notes[0]
        boom = by[("raises", ctx)]
        assert boom.status == "failed" and boom.timing is None
        assert boom.notes == ["raised RuntimeError: kernel exploded"]


def test_no_refcheck_times_whatever_it_is_given():
    config = BenchConfig(shapes("decode")[:1], impls=["broken"], refcheck=False, **TINY)
    _, [r] = run_bench(config, extra_impls={"broken": broken})
    assert r.status == "ok" and r.max_rel_err is None and r.timing is not None


def test_extra_impls_registry_is_the_default(monkeypatch):
    from kvcache.kernels import bench_run

    monkeypatch.setitem(bench_run.EXTRA_IMPLS, "broken", broken)
    config = BenchConfig(shapes("decode")[:1], impls=None, **TINY)
    _, results = run_bench(config)
    assert {r.impl: r.status for r in results}["broken"] == "failed"


def test_energy_is_metered_in_one_window_per_timed_implementation():
    mon = FakeMonitor()
    config = BenchConfig(shapes("decode")[:1], impls=["torch", "dense_sdpa", "broken"], energy_s=0.05, **TINY)
    _, results = run_bench(config, monitor=mon, extra_impls={"broken": broken})
    assert mon.windows == 2  # not for the failed one
    for r in results[:2]:
        assert r.energy_window.energy_j == 50.0
        assert r.energy_steps >= 0.05 / r.timing.median - 1
    row = results[0].as_row()
    assert row["energy_steps"] == results[0].energy_steps and row["tokens"] == 2


def test_an_unavailable_monitor_is_not_used():
    mon = FakeMonitor()
    mon.available = False
    config = BenchConfig(shapes("decode")[:1], impls=["torch"], **TINY)
    _, [r] = run_bench(config, monitor=mon, extra_impls={})
    assert mon.windows == 0 and r.energy_window is None


def test_progress_advances_once_per_shape_and_implementation():
    steps = []
    config = BenchConfig(shapes("decode"), impls=["torch", "triton", "broken"], **TINY)
    run_bench(config, advance=steps.append, extra_impls={"broken": broken})
    assert sum(steps) == total_steps(config, {"broken": broken}) == 6


def test_config_rejects_zero_repeats():
    with pytest.raises(ValueError):
        BenchConfig([], repeat=0)


def test_gpu_path_graphs_capturable_decode_and_times_with_events(monkeypatch):
    """The CUDA branch of run_shape, with the CUDA calls replaced by fakes on CPU tensors."""
    from kvcache.kernels import bench_cases, bench_run
    from kvcache.kernels.timing import Timing

    real_build = bench_cases.build_case
    monkeypatch.setattr(bench_run, "build_case", lambda shape, device, seed: real_build(shape, "cpu", seed))
    captured, timed = [], []

    def capture(fn):  # the paged call syncs with the host; the dense one captures
        captured.append(fn)
        return None if len(captured) == 1 else (lambda: "replayed")

    def time_cuda(fn, warmup, repeat, flush):
        timed.append((fn(), flush))
        return Timing.of([1e-3] * repeat)

    monkeypatch.setattr(bench_run, "capture_cuda_graph", capture)
    monkeypatch.setattr(bench_run, "time_cuda", time_cuda)
    monkeypatch.setattr(bench_run, "synchronize", lambda device: None)
    mon = FakeMonitor()
    config = BenchConfig(shapes("decode")[:1], device="cuda", impls=["torch", "dense_sdpa"], energy_s=0.01, **TINY)
    torch_row, sdpa_row = bench_run.run_shape(config.shapes[0], config.impls, config, {}, mon, flush="FLUSH")
    assert len(captured) == 2
    assert not torch_row.cuda_graph and "not CUDA-graph capturable" in torch_row.notes[0]
    assert sdpa_row.cuda_graph and not sdpa_row.notes
    assert timed[1] == ("replayed", "FLUSH")  # the dense step is timed from its graph, with the L2 flush
    assert torch_row.timing.median == 1e-3 and mon.windows == 2
    assert sdpa_row.energy_steps == 10  # 0.01 s / 1 ms


def test_gpu_prefill_is_not_graphed(monkeypatch):
    from kvcache.kernels import bench_cases, bench_run
    from kvcache.kernels.timing import Timing

    real_build = bench_cases.build_case
    monkeypatch.setattr(bench_run, "build_case", lambda shape, device, seed: real_build(shape, "cpu", seed))
    monkeypatch.setattr(bench_run, "capture_cuda_graph", lambda fn: pytest.fail("prefill captured"))
    monkeypatch.setattr(bench_run, "time_cuda", lambda fn, w, r, flush: Timing.of([2e-3]))
    config = BenchConfig(shapes("prefill")[:1], device="cuda", impls=["dense_grouped"], **TINY)
    [row] = bench_run.run_shape(config.shapes[0], config.impls, config, {})
    assert row.status == "ok" and not row.cuda_graph and row.timing.median == 2e-3


@pytest.mark.parametrize("module", ["timing", "bench_cases", "bench_impls", "bench_run"])
def test_bench_kernels_import_only_torch_and_kernels(module):
    import ast
    from pathlib import Path

    import kvcache.kernels as pkg

    tree = ast.parse((Path(pkg.__file__).parent / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module)
    forbidden = {m for m in imported if m.startswith(("kvcache.", "numpy", "pandas", "matplotlib", "triton"))}
    assert not forbidden, forbidden
