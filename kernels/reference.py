"""The float64 oracle for paged attention.

Deliberately naive: for each sequence it gathers the sequence's blocks into a
dense ``[L, Hkv, D]`` tensor, upcasts to float64, repeats the kv heads for
GQA, builds the bottom-right causal mask explicitly and runs a plain softmax.
Every other implementation is tested against this one, so it favours being
obviously right over being fast.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .validate import check_paged_inputs

if TYPE_CHECKING:
    import torch


def gather_sequence(
    cache: torch.Tensor, block_table_row: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """Copy one sequence's tokens out of a paged cache, in order.

    Args:
        cache: ``[num_blocks, block_size, Hkv, D]``.
        block_table_row: ``[max_blocks]`` physical block ids of the sequence.
        seq_len: tokens to keep; slots past it (in the last block) are dropped.

    Returns:
        ``[seq_len, Hkv, D]``, a new tensor.
    """
    block_size = cache.shape[1]
    n_blocks = -(-seq_len // block_size)
    blocks = block_table_row[:n_blocks].long()
    # dense: [n_blocks * block_size, Hkv, D] -> keep the first seq_len rows
    dense = cache[blocks].reshape(n_blocks * block_size, *cache.shape[2:])
    return dense[:seq_len]


def reference_paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Dense float64 paged attention, one sequence at a time.

    Arguments and result are those of :func:`kvcache.kernels.paged_attention`.
    """
    import torch

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
    out = torch.zeros_like(q)  # q: [T, Hq, D]
    for b, seq_len in enumerate(s.seq_lens):
        q_len = s.q_len(b)
        if q_len == 0:
            continue
        start = s.q_starts[b]
        qb = q[start:start + q_len].double().transpose(0, 1)  # [Hq, q_len, D]
        k = gather_sequence(k_cache, block_table[b], seq_len).double()  # [L, Hkv, D]
        v = gather_sequence(v_cache, block_table[b], seq_len).double()  # [L, Hkv, D]
        # The oracle may copy: repeat kv heads so head h reads kv head h // group.
        k = k.repeat_interleave(s.group, dim=1).transpose(0, 1)  # [Hq, L, D]
        v = v.repeat_interleave(s.group, dim=1).transpose(0, 1)  # [Hq, L, D]
        scores = (qb @ k.transpose(1, 2)) * scale  # [Hq, q_len, L]
        # Bottom-right causal: query i sees kv positions 0 .. L - q_len + i.
        i = torch.arange(q_len, device=q.device)[:, None]
        j = torch.arange(seq_len, device=q.device)[None, :]
        allowed = j <= (seq_len - q_len) + i  # [q_len, L]
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[start:start + q_len] = (probs @ v).transpose(0, 1).to(q.dtype)  # [q_len, Hq, D]
    return out
