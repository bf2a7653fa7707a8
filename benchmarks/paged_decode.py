"""One paged decode step on CPU against contiguous decode and a copy ceiling.

Measured side by side in one run, round-robin (so a noisy neighbour slows
every variant alike), after each is checked against the float64 oracle:

* **copy ceiling**: ``dst.copy_(src)`` of ``--copy-mib``; GB/s counts read + write;
* **contiguous grouped**: K/V as ``[B, Hkv, L, D]``, grouped matmul, no repeat;
* **contiguous SDPA**: ``scaled_dot_product_attention(enable_gqa=True)``;
* **paged**: ``kvcache.kernels.paged_attention(impl="torch")`` as it runs by
  default, on a cache whose physical blocks are shuffled: the fused C kernel
  (``kvcache.kernels._paged_cpu``) for CPU fp32 when it is built and
  ``KVCACHE_PURE_TORCH`` is not set, else the torch chunked path;
* **paged C**: the C kernel called directly (when built, whatever the env);
* **paged torch chunked**: the torch ops path (``use_c=False``), gathering
  ~1 MiB chunks of blocks;
* **paged torch, whole-sequence gather**: the same with each sequence
  gathered whole first (``decode_chunk_bytes=None``);
* **gather only**: ``index_select(out=)`` of every sequence's K and V into a
  preallocated buffer, no attention: the cost of paging by itself.

GB/s is bytes of K+V read per step over the median time; "% ceiling" divides
that by the copy figure. The paged/contiguous ratio uses the best contiguous
median. Thread count is torch's default unless ``--threads`` is given; the C
kernel uses as many pthreads.

    python benchmarks/paged_decode.py [--context 4096] [--repeat 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from kvcache import kernels
from kvcache.kernels.dense import dense_decode_grouped, dense_decode_sdpa
from kvcache.kernels.paged_torch import (
    Workspace,
    c_decode_kernel,
    decode_c,
    paged_attention_torch,
)
from kvcache.kernels.testing import relative_error
from kvcache.kernels.validate import check_paged_inputs

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOL = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.5e-2}


def environment() -> dict:
    """Versions, machine and git sha, so a figure can be traced to what produced it."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=root, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "git_sha": sha, "argv": sys.argv,
        "repro_command": "python benchmarks/paged_decode.py " + " ".join(sys.argv[1:]),
    }


def quantiles(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)

    def q(p: float) -> float:
        i = (len(xs) - 1) * p
        lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)

    return {"median": statistics.median(xs), "p20": q(0.2), "p80": q(0.8)}


def build(args, dtype):
    """Contiguous K/V and a shuffled paged copy of the very same values."""
    gen = torch.Generator().manual_seed(args.seed)
    b, hq, hkv, d, n_ctx, bs = (args.batch, args.q_heads, args.kv_heads, args.head_dim,
                                args.context, args.block_size)
    n_blk = -(-n_ctx // bs)
    q = torch.randn(b, hq, d, generator=gen).to(dtype)  # [B, Hq, D]
    k = torch.randn(b, hkv, n_ctx, d, generator=gen).to(dtype)  # [B, Hkv, L, D]
    v = torch.randn(b, hkv, n_ctx, d, generator=gen).to(dtype)
    num_blocks = b * n_blk
    perm = torch.randperm(num_blocks, generator=gen)
    table = perm.view(b, n_blk).to(torch.int32)  # [B, n_blk], shuffled physical ids
    k_cache = torch.full((num_blocks, bs, hkv, d), float("nan"), dtype=dtype)
    v_cache = torch.full_like(k_cache, float("nan"))
    pad = n_blk * bs - n_ctx
    for x, cache in ((k, k_cache), (v, v_cache)):
        # [B, Hkv, L, D] -> [B, n_blk, bs, Hkv, D]; tail slots of a partial block stay NaN
        tok = torch.nn.functional.pad(x.transpose(1, 2), (0, 0, 0, 0, 0, pad), value=float("nan"))
        cache[table.long().flatten()] = tok.reshape(b * n_blk, bs, hkv, d)
    lens = torch.full((b,), n_ctx, dtype=torch.int32)
    return q, k, v, k_cache, v_cache, table, lens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--q-heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per variant")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--copy-mib", type=int, default=1024, help="size of the copy ceiling")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    q, k, v, k_cache, v_cache, table, lens = build(args, dtype)
    kv_bytes = 2 * k.numel() * k.element_size()
    ref = kernels.reference_paged_attention(q, k_cache, v_cache, table, lens)  # [B, Hq, D]
    src = torch.ones(args.copy_mib << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    gather_ws = torch.empty(table.shape[1], *k_cache.shape[1:], dtype=dtype)
    table64 = table.long()
    ws = Workspace()

    def gather_only():
        for row in table64:
            torch.index_select(k_cache, 0, row, out=gather_ws)
            torch.index_select(v_cache, 0, row, out=gather_ws)

    shapes = check_paged_inputs(q, k_cache, v_cache, table, lens, None)
    try:
        from kvcache.kernels import _paged_cpu
    except ImportError:
        _paged_cpu = None
    # What paged_attention(impl="torch") runs here by default.
    default_c = c_decode_kernel(q, k_cache, v_cache, shapes)
    paged_impl = "torch chunked" if default_c is None else f"c ({default_c.simd()})"
    c_out = torch.empty_like(q)

    def paged_c():
        decode_c(_paged_cpu, q, k_cache, v_cache, table, shapes, 1.0 / args.head_dim ** 0.5, c_out)
        return c_out

    variants = {
        "contiguous_grouped": lambda: dense_decode_grouped(q, k, v),
        "contiguous_sdpa": lambda: dense_decode_sdpa(q, k, v),
        "paged": lambda: kernels.paged_attention(q, k_cache, v_cache, table, lens, impl="torch"),
    }
    if _paged_cpu is not None and dtype == torch.float32:
        variants["paged_c"] = paged_c
    variants["paged_torch_chunked"] = lambda: paged_attention_torch(
        q, k_cache, v_cache, table, lens, workspace=ws, use_c=False)
    variants["paged_torch_whole_gather"] = lambda: paged_attention_torch(
        q, k_cache, v_cache, table, lens, workspace=ws, decode_chunk_bytes=None, use_c=False)
    errors = {}
    for name, fn in variants.items():
        errors[name] = relative_error(fn(), ref)
        if errors[name] > TOL[args.dtype]:
            sys.exit(f"{name}: relative error {errors[name]:.2e} against the oracle")
    variants["gather_only"] = gather_only
    variants["copy_ceiling"] = lambda: dst.copy_(src)

    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.repeat):
        for name, fn in variants.items():  # round-robin: noise hits every variant
            t0 = time.perf_counter()
            fn()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    copy = quantiles(times.pop("copy_ceiling"))
    copy_gbs = 2 * src.numel() / copy["median"] / 1e9
    results = {}
    for name, ts in times.items():
        qs = quantiles(ts)
        gbs = kv_bytes / qs["median"] / 1e9
        results[name] = {**{f"{k}_ms": x * 1e3 for k, x in qs.items()}, "kv_gb_s": gbs,
                         "pct_copy_ceiling": 100 * gbs / copy_gbs,
                         "rel_error": errors.get(name)}
    best = min(("contiguous_grouped", "contiguous_sdpa"), key=lambda n: results[n]["median_ms"])
    ratio = results["paged"]["median_ms"] / results[best]["median_ms"]
    ratios = {name: results[name]["median_ms"] / results[best]["median_ms"]
              for name in ("paged", "paged_c", "paged_torch_chunked") if name in results}

    print(f"B={args.batch} Hq={args.q_heads} Hkv={args.kv_heads} D={args.head_dim} "
          f"L={args.context} block={args.block_size} {args.dtype}; K+V {kv_bytes / 1e6:.0f} MB; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"copy ceiling: {copy_gbs:.1f} GB/s (read+write, {args.copy_mib} MiB, "
          f"median {copy['median'] * 1e3:.1f} ms)")
    print(f"paged = paged_attention(impl=\"torch\") default path here: {paged_impl}")
    print(f"{'variant':<26}{'median ms':>10}{'p20':>8}{'p80':>8}{'GB/s':>8}{'% ceil':>8}{'rel err':>10}")
    for name, r in results.items():
        err = "" if r["rel_error"] is None else f"{r['rel_error']:.1e}"
        print(f"{name:<26}{r['median_ms']:>10.1f}{r['p20_ms']:>8.1f}{r['p80_ms']:>8.1f}"
              f"{r['kv_gb_s']:>8.1f}{r['pct_copy_ceiling']:>7.0f}%{err:>10}")
    for name, r in ratios.items():
        note = " (target <= 1.5x)" if name == "paged" else ""
        print(f"{name} / {best}: {r:.2f}x{note}")

    if args.json:
        report = {
            "env": environment(),
            "shape": {"batch": args.batch, "q_heads": args.q_heads, "kv_heads": args.kv_heads,
                      "head_dim": args.head_dim, "context": args.context,
                      "block_size": args.block_size, "dtype": args.dtype, "kv_bytes": kv_bytes},
            "repeat": args.repeat, "warmup": args.warmup,
            "copy_ceiling": {"gb_s": copy_gbs, **{f"{k}_ms": x * 1e3 for k, x in copy.items()}},
            "paged_impl": paged_impl, "results": results, "best_contiguous": best,
            "paged_over_contiguous": ratio, "ratios_over_contiguous": ratios,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
