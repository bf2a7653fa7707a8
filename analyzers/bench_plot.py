"""``kvcache bench --plot``: GB/s against context length, one line per implementation.

One subplot per op (decode, prefill) present in the report; the copy ceiling
is a dashed horizontal line on each. When the sweep has several batch sizes,
block sizes, GQA ratios or dtypes, each combination is its own line, labelled
with what differs. matplotlib is imported here, lazily, with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvcache.engine.errors import KVCacheError

_VARYING = (("batch", "B"), ("block_size", "blk"), ("heads_kv", "Hkv"), ("heads_q", "Hq"),
            ("head_dim", "D"), ("dtype", ""), ("q_len", "q"))


def _series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Label -> [(context, GB/s)], sorted by context."""
    varying = [(k, short) for k, short in _VARYING if len({r.get(k) for r in rows}) > 1]
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        extra = " ".join(f"{short}={r.get(k)}" if short else str(r.get(k)) for k, short in varying)
        label = r["impl"] + (f" ({extra})" if extra else "")
        lines.setdefault(label, []).append((r["context"], r["gbps"]))
    return {k: sorted(v) for k, v in lines.items()}


def plot_bandwidth(report: dict[str, Any], path: str | Path) -> list[str]:
    """Write the PNG (or SVG, by suffix) and return the ops plotted.

    Raises:
        KVCacheError: matplotlib is missing, nothing was timed, or the file cannot be written.
    """
    rows = [r for r in report["results"] if r.get("gbps") is not None]
    if not rows:
        raise KVCacheError("--plot: no timed results to plot")
    try:
        import matplotlib
    except ImportError:
        raise KVCacheError("--plot needs matplotlib: pip install 'kvcache[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op in ("decode", "prefill") if any(r["op"] == op for r in rows)]
    ceiling = report.get("ceiling", {}).get("copy_gbps")
    fig, axes = plt.subplots(1, len(ops), figsize=(6.5 * len(ops), 4.5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for label, pts in _series([r for r in rows if r["op"] == op]).items():
            ax.plot([c for c, _ in pts], [g for _, g in pts], marker="o", label=label)
        if ceiling:
            ax.axhline(ceiling, color="black", linestyle="--", linewidth=1,
                       label=f"copy ceiling {ceiling:.0f} GB/s")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("GB/s (bytes moved / median time)")
        ax.set_title(op)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    device = report.get("env", {}).get("device") or ""
    fig.suptitle(f"kvcache bench: paged attention vs dense, {device}".rstrip(", "))
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise KVCacheError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return ops
