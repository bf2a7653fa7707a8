"""--plot: GB/s against context per implementation, with the ceiling (analyzers/bench_plot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from kvcache.analyzers import bench_plot  # noqa: E402
from kvcache.engine.errors import KVCacheError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(op: str, impl: str, context: int, gbps: float | None, batch: int = 2) -> dict:
    return {"op": op, "impl": impl, "context": context, "gbps": gbps, "batch": batch, "block_size": 16,
            "heads_q": 32, "heads_kv": 8, "head_dim": 128, "dtype": "fp32", "q_len": 1}


def test_one_subplot_per_op_with_the_ceiling(tmp_path: Path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    real_subplots = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: figures.append(real_subplots(*a, **k)) or figures[-1])
    report = {"ceiling": {"copy_gbps": 30.0}, "env": {"device": "cpu"}, "results": [
        row("decode", "torch", 256, 5.0), row("decode", "torch", 1024, 8.0), row("decode", "dense_sdpa", 256, 9.0),
        row("prefill", "torch", 256, 2.0), row("decode", "broken", 256, None),
    ]}
    ops = bench_plot.plot_bandwidth(report, tmp_path / "p.png")
    assert ops == ["decode", "prefill"]
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    _, axes = figures[0]
    decode = axes[0][0]
    labels = [line.get_label() for line in decode.get_lines()]
    assert labels == ["torch", "dense_sdpa", "copy ceiling 30 GB/s"]
    assert list(decode.get_lines()[0].get_xdata()) == [256, 1024]
    assert list(decode.get_lines()[-1].get_ydata()) == [30.0, 30.0]  # the horizontal ceiling


def test_varying_batches_get_their_own_lines():
    series = bench_plot._series([row("decode", "torch", 256, 1.0, batch=2), row("decode", "torch", 256, 2.0, batch=8)])
    assert list(series) == ["torch (B=2)", "torch (B=8)"]


def test_nothing_timed_is_an_error(tmp_path: Path):
    with pytest.raises(KVCacheError, match="no timed results"):
        bench_plot.plot_bandwidth({"results": [row("decode", "x", 1, None)]}, tmp_path / "p.png")
