"""Benchmark shapes, their inputs and the reference check; torch only.

One :class:`BenchShape` is one timed problem: ``batch`` sequences of
``context`` tokens each, with ``q_len`` new query tokens per sequence (1 for
decode). :func:`build_case` makes its inputs twice over, with the same values:

    paged       k_cache, v_cache [num_blocks, block_size, Hkv, D]   physical blocks
                block_table int32 [B, ceil(L / block_size)]          shuffled, unused
                                                                     slots NaN
    contiguous  k, v [B, Hkv, L, D]                                  for the dense baselines

so every implementation, paged or dense, computes the same attention and is
checked against the same float64 oracle (:func:`reference_rows`).

Bytes moved are the least any kernel must move: K and V of the context once,
q in, out back, and the block table. Attention FLOPs are ``4 * Hq * D`` per
(query, key) pair that the causal mask lets through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# max|out - ref| / max|ref| against the float64 oracle (shared/reference/kernels.md).
TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.5e-2}
OPS = ("decode", "prefill")
# Query rows checked at each end of a long prefill (the oracle is O(rows x L)).
CHECK_ROWS = 64



@dataclass(slots=True, frozen=True)
class BenchShape:
    """One problem size. ``q_len`` is 1 for decode; for prefill, new tokens per sequence."""

    op: str
    batch: int
    context: int
    block_size: int
    heads_q: int
    heads_kv: int
    head_dim: int
    dtype: str
    q_len: int = 1

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("batch", "context", "block_size", "heads_q", "heads_kv", "head_dim", "q_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.heads_q % self.heads_kv:
            raise ValueError(f"heads_q ({self.heads_q}) must be a multiple of heads_kv ({self.heads_kv})")
        if self.op == "decode" and self.q_len != 1:
            raise ValueError(f"decode has one query token per sequence, got q_len={self.q_len}")
        if self.q_len > self.context:
            raise ValueError(f"q_len ({self.q_len}) exceeds the context ({self.context})")

    @property
    def tokens(self) -> int:
        """T: query tokens in one call, all sequences together."""
        return self.batch * self.q_len

    @property
    def blocks_per_seq(self) -> int:
        return -(-self.context // self.block_size)

    @property
    def kv_bytes(self) -> int:
        """K and V of every sequence's context."""
        return 2 * self.batch * self.context * self.heads_kv * self.head_dim * ELEMENT_BYTES[self.dtype]

    @property
    def bytes_moved(self) -> int:
        """K+V read, q read, out written, block table, seq_lens and cu_seqlens_q read."""
        qo = 2 * self.tokens * self.heads_q * self.head_dim * ELEMENT_BYTES[self.dtype]
        table = 4 * self.batch * self.blocks_per_seq
        lens = 4 * self.batch + (4 * (self.batch + 1) if self.op == "prefill" else 0)
        return self.kv_bytes + qo + table + lens

    @property
    def causal_pairs(self) -> int:
        """(query, key) pairs the bottom-right causal mask keeps, all sequences."""
        q, ctx = self.q_len, self.context
        return self.batch * (q * (ctx - q) + q * (q + 1) // 2)

    @property
    def flops(self) -> int:
        """Attention FLOPs: QK^T and PV, 2 multiply-adds each, per kept pair and head."""
        return 4 * self.heads_q * self.head_dim * self.causal_pairs


@dataclass(slots=True)
class BenchCase:
    """The inputs of one shape, paged and contiguous, with the same values."""

    shape: BenchShape
    q: torch.Tensor  # [T, Hq, D], T = B * q_len, sequence-major
    k_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    block_table: torch.Tensor  # int32 [B, blocks_per_seq]
    seq_lens: torch.Tensor  # int32 [B]
    cu_seqlens_q: torch.Tensor | None  # int32 [B + 1]; None for decode
    k: torch.Tensor  # [B, Hkv, L, D]
    v: torch.Tensor  # [B, Hkv, L, D]

    def args(self) -> tuple:
        """Positional arguments of ``kvcache.kernels.paged_attention``."""
        return (self.q, self.k_cache, self.v_cache, self.block_table, self.seq_lens, self.cu_seqlens_q)


def sweep_shapes(ops: list[str], dtypes: list[str], batches: list[int], block_sizes: list[int],
                 heads: list[tuple[int, int]], head_dim: int, contexts: list[int],
                 prefill_len: int = 0) -> list[BenchShape]:
    """Every combination, context innermost (so a plot's lines come in order).

    ``heads`` holds (Hq, Hkv) pairs; a prefill's q_len is ``prefill_len``
    capped at the context, or the whole context when ``prefill_len`` is 0.
    """
    shapes = []
    for op in ops:
        for dt in dtypes:
            for b in batches:
                for bs in block_sizes:
                    for hq, hkv in heads:
                        for ctx in contexts:
                            q = 1 if op == "decode" else min(prefill_len or ctx, ctx)
                            shapes.append(BenchShape(op, b, ctx, bs, hq, hkv, head_dim, dt, q))
    return shapes


def build_case(shape: BenchShape, device: str = "cpu", seed: int = 0) -> BenchCase:
    """Random inputs for ``shape``: contiguous K/V, and a shuffled paged copy of them.

    The paged cache has one spare block, and the slots past ``context`` in
    each last block, filled with NaN: an implementation reading them fails
    the reference check.
    """
    import torch

    dt = getattr(torch, DTYPES[shape.dtype])
    b, hq, hkv, d, n_ctx, bs = (shape.batch, shape.heads_q, shape.heads_kv, shape.head_dim,
                                shape.context, shape.block_size)
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(shape.tokens, hq, d, generator=gen, device=device, dtype=dt)  # [T, Hq, D]
    k = torch.randn(b, hkv, n_ctx, d, generator=gen, device=device, dtype=dt)  # [B, Hkv, L, D]
    v = torch.randn(b, hkv, n_ctx, d, generator=gen, device=device, dtype=dt)
    n_blk = shape.blocks_per_seq
    num_blocks = b * n_blk + 1
    perm = torch.randperm(num_blocks, generator=gen, device=device)
    table = perm[: b * n_blk].view(b, n_blk).to(torch.int32)  # [B, n_blk] physical ids
    k_cache = torch.full((num_blocks, bs, hkv, d), float("nan"), dtype=dt, device=device)
    v_cache = torch.full_like(k_cache, float("nan"))
    pad = n_blk * bs - n_ctx
    for x, cache in ((k, k_cache), (v, v_cache)):
        # [B, Hkv, L, D] -> [B, L + pad, Hkv, D] -> [B * n_blk, bs, Hkv, D]
        tok = torch.nn.functional.pad(x.transpose(1, 2), (0, 0, 0, 0, 0, pad), value=float("nan"))
        cache[table.long().flatten()] = tok.reshape(b * n_blk, bs, hkv, d)
    lens = torch.full((b,), n_ctx, dtype=torch.int32, device=device)
    cu = None
    if shape.op == "prefill":
        cu = torch.arange(0, b + 1, dtype=torch.int32, device=device) * shape.q_len  # [B + 1]
    return BenchCase(shape, q, k_cache, v_cache, table, lens, cu, k, v)


# ---------------------------------------------------------------- reference check
def check_rows(shape: BenchShape) -> list[tuple[int, int, int]]:
    """Which query rows the oracle checks: ``(sequence, first row, last row + 1)``.

    The first and the last sequence; for a prefill longer than
    ``2 * CHECK_ROWS`` queries, its first and last ``CHECK_ROWS`` rows (the
    shortest and the longest causal windows), else all of them.
    """
    seqs = sorted({0, shape.batch - 1})
    q = shape.q_len
    spans = [(0, q)] if q <= 2 * CHECK_ROWS else [(0, CHECK_ROWS), (q - CHECK_ROWS, q)]
    return [(b, lo, hi) for b in seqs for lo, hi in spans]


def reference_rows(case: BenchCase) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 oracle on the rows of :func:`check_rows`.

    Each span becomes a sequence of its own for ``reference_paged_attention``:
    rows lo..hi of a sequence with q_len queries over L keys see keys up to
    ``L - q_len + i``, i.e. a sequence of ``L - q_len + hi`` keys whose last
    ``hi - lo`` tokens are the queries. Only those blocks are upcast.

    Returns:
        ``(rows, ref)``: int64 ``[R]`` indices into the packed output and the
        float64 reference ``[R, Hq, D]``.
    """
    import torch

    from . import reference_paged_attention

    s, dev = case.shape, case.q.device
    rows, qs, lens, q_lens, ks, vs, tables = [], [], [], [], [], [], []
    used = 0
    for b, lo, hi in check_rows(s):
        ctx = s.context - s.q_len + hi
        n = -(-ctx // s.block_size)
        blocks = case.block_table[b, :n].long()
        ks.append(case.k_cache[blocks].double())
        vs.append(case.v_cache[blocks].double())
        tables.append(torch.arange(used, used + n, device=dev))
        used += n
        idx = torch.arange(b * s.q_len + lo, b * s.q_len + hi, device=dev)
        rows.append(idx)
        qs.append(case.q[idx].double())
        lens.append(ctx)
        q_lens.append(hi - lo)
    width = max(len(t) for t in tables)
    table = torch.zeros(len(tables), width, dtype=torch.int32, device=dev)
    for i, t in enumerate(tables):
        table[i, : len(t)] = t.to(torch.int32)
    cu = torch.zeros(len(q_lens) + 1, dtype=torch.int32, device=dev)
    cu[1:] = torch.tensor(q_lens, device=dev).cumsum(0)
    ref = reference_paged_attention(
        torch.cat(qs), torch.cat(ks), torch.cat(vs), table,
        torch.tensor(lens, dtype=torch.int32, device=dev), cu,
    )  # [R, Hq, D] float64
    return torch.cat(rows), ref


def max_rel_err(runner: Any, rows: torch.Tensor, ref: torch.Tensor) -> float:
    """Run a :class:`~kvcache.kernels.bench_impls.Runner` once; ``max|out - ref| / max|ref|``
    over the checked rows (inf on NaN)."""
    from .testing import relative_error

    out = runner.packed(runner.fn())  # [T, Hq, D]
    return relative_error(out.index_select(0, rows), ref)
