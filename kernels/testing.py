"""Random paged-attention inputs for tests and benchmarks.

:func:`make_paged_case` lays sequences out the way a real engine leaves them:
physical blocks shuffled, the unused tail of each last block and every unused
block poisoned with NaN, and junk (even out-of-range ids) past each sequence's
blocks in ``block_table``. An implementation that reads anything it should not
produces NaN or an index error instead of a plausible number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(slots=True)
class PagedCase:
    """One call's worth of inputs, in the order ``paged_attention`` takes them."""

    q: torch.Tensor  # [T, Hq, D]
    k_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    block_table: torch.Tensor  # int32 [B, max_blocks]
    seq_lens: torch.Tensor  # int32 [B]
    cu_seqlens_q: torch.Tensor | None  # int32 [B + 1], None for decode

    def args(self) -> tuple:
        return (self.q, self.k_cache, self.v_cache, self.block_table, self.seq_lens,
                self.cu_seqlens_q)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|out - ref| / max|ref|``, in float64; inf if out has a NaN, 0 if empty."""
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(out.shape)} vs {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    diff = (out.double() - ref.double()).abs().max()
    if diff.isnan():
        return float("inf")
    return float(diff / ref.double().abs().max().clamp_min(1e-30))


def make_paged_case(
    seq_lens: list[int],
    q_lens: list[int] | None = None,
    *,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype | None = None,
    shuffle: bool = True,
    poison: bool = True,
    spare_blocks: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> PagedCase:
    """Build random inputs with each sequence's K/V already in the cache.

    Args:
        seq_lens: context length of each sequence, new tokens included.
        q_lens: query tokens per sequence; None means decode (one each, and
            ``cu_seqlens_q`` is None).
        shuffle: scatter blocks over the cache in random order.
        poison: fill every slot no sequence uses with NaN.
        spare_blocks: unused blocks added to the cache (poisoned).
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    gen = torch.Generator().manual_seed(seed)
    n_blocks = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(n_blocks) + spare_blocks
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    fill = float("nan") if poison else 0.0
    k_cache = torch.full(shape, fill, dtype=dtype)
    v_cache = torch.full(shape, fill, dtype=dtype)
    order = torch.randperm(num_blocks, generator=gen) if shuffle else torch.arange(num_blocks)
    max_blocks = max(n_blocks, default=0) + 1  # one junk column at least
    # Junk past each sequence's blocks: ids of other blocks, -1 and out of range.
    table = torch.randint(-1, num_blocks + 4, (len(seq_lens), max_blocks), generator=gen)
    used = 0
    for b, (seq_len, n) in enumerate(zip(seq_lens, n_blocks)):
        blocks = order[used:used + n]
        used += n
        table[b, :n] = blocks
        pos = torch.arange(seq_len)
        blk, off = blocks[pos // block_size], pos % block_size
        k_cache[blk, off] = torch.randn(seq_len, num_kv_heads, head_dim, generator=gen).to(dtype)
        v_cache[blk, off] = torch.randn(seq_len, num_kv_heads, head_dim, generator=gen).to(dtype)
    if q_lens is None:
        cu = None
        num_tokens = len(seq_lens)
    else:
        if len(q_lens) != len(seq_lens):
            raise ValueError("q_lens and seq_lens must have one entry per sequence")
        cu = torch.zeros(len(q_lens) + 1, dtype=torch.int32)
        cu[1:] = torch.tensor(q_lens, dtype=torch.int64).cumsum(0)
        num_tokens = int(cu[-1])
    q = torch.randn(num_tokens, num_q_heads, head_dim, generator=gen).to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    return PagedCase(
        q.to(device), k_cache.to(device), v_cache.to(device),
        table.to(torch.int32).to(device), lens.to(device),
        None if cu is None else cu.to(device),
    )
