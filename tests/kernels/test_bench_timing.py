"""Timers and ceilings of kvcache bench (kernels/timing.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvcache.kernels import timing  # noqa: E402
from kvcache.kernels.timing import Timing, quantile, time_round_robin  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_quantiles_interpolate_like_numpy():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert quantile(xs, 0.2) == pytest.approx(1.8)
    assert quantile(xs, 0.8) == pytest.approx(4.2)
    assert quantile(xs, 0.5) == 3.0
    assert quantile([7.0], 0.2) == 7.0
    t = Timing.of(xs)
    assert (t.median, t.p20, t.p80) == (3.0, pytest.approx(1.8), pytest.approx(4.2))
    with pytest.raises(ValueError):
        Timing.of([])


def test_round_robin_interleaves_and_drops_the_warmup(monkeypatch):
    calls = []
    clock = iter(range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(clock)))
    out = time_round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           warmup=2, repeat=3)
    assert calls == ["a", "b"] * 5  # round i calls every implementation once
    assert len(out["a"].samples) == len(out["b"].samples) == 3
    assert out["a"].median == 1.0  # each call spans one tick of the fake clock


def test_copy_and_matmul_ceilings_on_cpu():
    copy = timing.measure_copy("cpu", mib=4, warmup=1, repeat=3)
    assert copy["copy_gbps"] > 0 and copy["copy_mib"] == 4
    assert copy["copy_p20_gbps"] <= copy["copy_gbps"] <= copy["copy_p80_gbps"]
    # 2 x 4 MiB moved in the median time
    assert copy["copy_gbps"] == pytest.approx(2 * (4 << 20) / 1e9 / (copy["copy_median_ms"] / 1e3))
    mm = timing.measure_matmul("cpu", "float32", 64, warmup=1, repeat=3)
    assert mm["matmul_tflops"] > 0 and mm["matmul_n"] == 64 and mm["matmul_dtype"] == "float32"


def test_device_info_on_cpu():
    info = timing.device_info("cpu")
    assert info["torch"] == torch.__version__ and info["cpu"] and info["device"] == info["cpu"]
    assert info["device_memory_gb"] is None


@cuda
def test_cuda_events_time_a_matmul():
    a = torch.randn(2048, 2048, device="cuda")
    t = timing.time_cuda(lambda: a @ a, warmup=2, repeat=5, flush=timing.l2_flush_buffer("cuda"))
    assert 0 < t.p20 <= t.median <= t.p80


@cuda
def test_graph_capture_refuses_host_syncs():
    x = torch.randn(1024, device="cuda")
    assert timing.capture_cuda_graph(lambda: x * 2) is not None
    assert timing.capture_cuda_graph(lambda: x.tolist()) is None
