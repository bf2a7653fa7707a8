"""Paged attention in plain torch, for prefill and decode.

Each sequence's blocks are gathered with ``index_select(..., out=)`` into a
preallocated workspace that lives across calls (allocating the gather buffer
on every call costs 2-5x on CPU, see kernels.md). GQA never copies K/V per
query head: q is viewed as ``[Hkv, group, D]`` so one batched matmul per kv
head serves its whole group of query heads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .validate import PagedShapes, check_paged_inputs

if TYPE_CHECKING:
    import torch

# Bytes of attention scores one query tile may hold; bounds prefill memory.
_SCORE_BUDGET = 64 << 20


class Workspace:
    """Gather buffers reused between calls, grown (never shrunk) on demand.

    One pair of flat buffers per (device, dtype). Not thread-safe: concurrent
    callers must each use their own ``Workspace``.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two contiguous views of ``shape`` (for K and V) into the buffers."""
        import torch

        n = math.prod(shape)
        key = (str(device), dtype)
        bufs = self._bufs.get(key)
        if bufs is None or bufs[0].numel() < n:
            grown = max(n, 2 * bufs[0].numel()) if bufs is not None else n
            bufs = (torch.empty(grown, dtype=dtype, device=device),
                    torch.empty(grown, dtype=dtype, device=device))
            self._bufs[key] = bufs
        return bufs[0][:n].view(shape), bufs[1][:n].view(shape)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for pair in self._bufs.values() for b in pair)


DEFAULT_WORKSPACE = Workspace()


def _gather(k_cache, v_cache, blocks, ws_k, ws_v):
    """index_select the sequence's blocks into the workspace views, in place."""
    import torch

    torch.index_select(k_cache, 0, blocks, out=ws_k)  # ws_k: [n, block_size, Hkv, D]
    torch.index_select(v_cache, 0, blocks, out=ws_v)


def _attend_sequence(q_b, k, v, s: PagedShapes, scale: float, out_b) -> None:
    """Causal attention of one sequence's queries over its dense K/V.

    Args:
        q_b: ``[q_len, Hq, D]``.
        k, v: ``[L, Hkv, D]`` (views into the workspace).
        out_b: ``[q_len, Hq, D]``, written in place.
    """
    import torch

    q_len, seq_len = q_b.shape[0], k.shape[0]
    hkv, g, d = s.num_kv_heads, s.group, s.head_dim
    kt = k.permute(1, 2, 0)  # [Hkv, D, L], a strided view, no copy
    vh = v.transpose(0, 1)  # [Hkv, L, D]
    tile = max(1, _SCORE_BUDGET // max(1, 4 * s.num_q_heads * seq_len))
    for i0 in range(0, q_len, tile):
        i1 = min(q_len, i0 + tile)
        n_kv = seq_len - q_len + i1  # the tile's last query sees kv 0 .. n_kv - 1
        # qh: [Hkv, (i1 - i0) * group, D]; queries of one kv head share the matmul.
        qh = (q_b[i0:i1] * scale).view(i1 - i0, hkv, g, d).transpose(0, 1)
        qh = qh.reshape(hkv, (i1 - i0) * g, d)
        scores = torch.matmul(qh, kt[:, :, :n_kv])  # [Hkv, tile * group, n_kv]
        if i1 - i0 > 1 or n_kv < seq_len:
            i = torch.arange(i0, i1, device=k.device)[:, None, None]
            j = torch.arange(n_kv, device=k.device)[None, None, :]
            masked = j > (seq_len - q_len) + i  # [tile, 1, n_kv]
            scores.view(hkv, i1 - i0, g, n_kv).masked_fill_(masked, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        o = torch.matmul(probs, vh[:, :n_kv])  # [Hkv, tile * group, D]
        out_b[i0:i1].view(i1 - i0, hkv, g, d).copy_(o.view(hkv, i1 - i0, g, d).transpose(0, 1))


def paged_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Paged attention with torch ops; arguments as in ``kvcache.kernels.paged_attention``.

    Args:
        workspace: gather buffers to reuse; defaults to a module-wide one.
    """
    import torch

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
    ws = DEFAULT_WORKSPACE if workspace is None else workspace
    out = torch.empty_like(q)  # [T, Hq, D]
    bs, hkv, d = s.block_size, s.num_kv_heads, s.head_dim
    max_len = max(s.seq_lens, default=0)
    max_blocks = -(-max_len // bs)
    ws_k, ws_v = ws.get((max_blocks, bs, hkv, d), q.dtype, q.device)
    table = block_table.long()  # index_select wants int64 indices
    for b, seq_len in enumerate(s.seq_lens):
        q_len = s.q_len(b)
        if q_len == 0:
            continue
        n = -(-seq_len // bs)
        _gather(k_cache, v_cache, table[b, :n], ws_k[:n], ws_v[:n])
        # Slots past seq_len in the last block are never read (may hold NaN).
        k = ws_k[:n].view(n * bs, hkv, d)[:seq_len]  # [L, Hkv, D]
        v = ws_v[:n].view(n * bs, hkv, d)[:seq_len]
        start = s.q_starts[b]
        _attend_sequence(q[start:start + q_len], k, v, s, scale, out[start:start + q_len])
    return out
