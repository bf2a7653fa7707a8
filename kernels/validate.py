"""Input checks shared by every paged-attention implementation.

Caller mistakes raise ``ValueError`` naming the argument and what was
expected; nothing here uses ``assert``. The checks also copy ``seq_lens`` and
``cu_seqlens_q`` to the host once, because every implementation needs them as
Python ints to size its loops and grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class PagedShapes:
    """Sizes of one paged-attention call, read off validated inputs.

    Attributes:
        num_tokens: T, packed query tokens.
        num_q_heads: Hq.
        num_kv_heads: Hkv (Hq is a multiple of it).
        head_dim: D.
        num_blocks: physical blocks in the cache.
        block_size: token slots per block.
        seq_lens: total context length of each sequence (new tokens included).
        q_starts: cumulative query lengths, ``len(seq_lens) + 1`` entries.
        is_decode: True when ``cu_seqlens_q`` was None (one query per sequence).
    """

    num_tokens: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    num_blocks: int
    block_size: int
    seq_lens: list[int]
    q_starts: list[int]
    is_decode: bool

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)

    @property
    def group(self) -> int:
        """Query heads per kv head."""
        return self.num_q_heads // self.num_kv_heads

    def q_len(self, b: int) -> int:
        return self.q_starts[b + 1] - self.q_starts[b]


def _is_int(t: torch.Tensor) -> bool:
    import torch

    return t.dtype in (torch.int32, torch.int64)


def check_paged_inputs(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
) -> PagedShapes:
    """Check a paged-attention call and return its sizes.

    Raises:
        ValueError: a shape, dtype, device or length is inconsistent, or a
            block id the call would read is outside the cache.
    """
    import torch

    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache),
                    ("block_table", block_table), ("seq_lens", seq_lens)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 3:
        raise ValueError(f"q must be [T, Hq, D], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4:
        raise ValueError(
            f"k_cache must be [num_blocks, block_size, Hkv, D], got shape {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape:
        raise ValueError(
            f"v_cache shape {tuple(v_cache.shape)} differs from k_cache shape {tuple(k_cache.shape)}"
        )
    if not q.dtype.is_floating_point or q.dtype != k_cache.dtype or q.dtype != v_cache.dtype:
        raise ValueError(
            f"q, k_cache and v_cache must share one floating dtype, got "
            f"{q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    num_tokens, hq, d = q.shape
    num_blocks, block_size, hkv, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"head dim of q ({d}) and k_cache ({dk}) differ")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"Hq ({hq}) must be a positive multiple of Hkv ({hkv})")
    if block_table.dim() != 2 or not _is_int(block_table):
        raise ValueError(
            f"block_table must be an int32 [B, max_blocks] tensor, got "
            f"{block_table.dtype} {tuple(block_table.shape)}"
        )
    num_seqs = block_table.shape[0]
    if seq_lens.dim() != 1 or seq_lens.shape[0] != num_seqs or not _is_int(seq_lens):
        raise ValueError(
            f"seq_lens must be an int32 [B={num_seqs}] tensor, got "
            f"{seq_lens.dtype} {tuple(seq_lens.shape)}"
        )
    tensors = [q, k_cache, v_cache, block_table, seq_lens]
    if cu_seqlens_q is not None:
        if (not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dim() != 1
                or cu_seqlens_q.shape[0] != num_seqs + 1 or not _is_int(cu_seqlens_q)):
            raise ValueError(f"cu_seqlens_q must be an int32 [B+1={num_seqs + 1}] tensor")
        tensors.append(cu_seqlens_q)
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"all tensors must be on one device, got {[str(t.device) for t in tensors]}")

    lens = [int(x) for x in seq_lens.tolist()]
    if cu_seqlens_q is None:
        if num_tokens != num_seqs:
            raise ValueError(
                f"decode (cu_seqlens_q=None) needs one query per sequence: "
                f"q has {num_tokens} tokens for {num_seqs} sequences"
            )
        starts = list(range(num_seqs + 1))
    else:
        starts = [int(x) for x in cu_seqlens_q.tolist()]
        if starts[0] != 0 or starts[-1] != num_tokens:
            raise ValueError(
                f"cu_seqlens_q must start at 0 and end at T={num_tokens}, got {starts[0]}..{starts[-1]}"
            )
    max_len = block_table.shape[1] * block_size
    for b, seq_len in enumerate(lens):
        q_len = starts[b + 1] - starts[b]
        if q_len < 0:
            raise ValueError(f"cu_seqlens_q must be non-decreasing (sequence {b})")
        if seq_len < q_len:
            raise ValueError(
                f"seq_lens[{b}]={seq_len} is shorter than its {q_len} query tokens"
            )
        if seq_len > max_len:
            raise ValueError(
                f"seq_lens[{b}]={seq_len} needs more than the {block_table.shape[1]} "
                f"blocks of block_table"
            )
    if num_seqs:
        # Only the blocks a sequence uses must be valid; the rest may be junk.
        used_blocks = (seq_lens.to(torch.int64) + block_size - 1) // block_size
        cols = torch.arange(block_table.shape[1], device=block_table.device)
        used = block_table[cols[None, :] < used_blocks[:, None]]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= num_blocks):
            raise ValueError(
                f"block_table holds block ids outside [0, {num_blocks}) within seq_lens"
            )
    return PagedShapes(num_tokens, hq, hkv, d, num_blocks, block_size, lens, starts,
                       cu_seqlens_q is None)
