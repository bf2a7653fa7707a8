"""Contiguous-KV decode baselines for the benchmarks.

These read K/V laid out per sequence as ``[B, Hkv, L, D]`` (no paging), so
they show what a paged kernel would cost if the gather were free. Both keep
GQA copy-free: the grouped matmul views q as ``[B, Hkv, group, D]``; SDPA gets
``enable_gqa=True`` where torch supports it (2.5+).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int]:
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"expected q [B, Hq, D] and k, v [B, Hkv, L, D], got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, hq, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or hq % k.shape[1] != 0:
        raise ValueError(f"q {tuple(q.shape)} does not fit k {tuple(k.shape)}")
    return b, hq, k.shape[1], d


def dense_decode_grouped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """One decode step over contiguous K/V with a grouped matmul.

    Args:
        q: ``[B, Hq, D]``, one query token per sequence.
        k: ``[B, Hkv, L, D]``.
        v: ``[B, Hkv, L, D]``.
        scale: softmax scale, default ``1 / sqrt(D)``.

    Returns:
        ``[B, Hq, D]``.
    """
    import torch

    b, hq, hkv, d = _check(q, k, v)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qg = (q * scale).view(b, hkv, hq // hkv, d)  # [B, Hkv, group, D]
    scores = torch.matmul(qg, k.transpose(-1, -2))  # [B, Hkv, group, L]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v).view(b, hq, d)  # [B, Hkv, group, D] -> [B, Hq, D]


def dense_decode_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """One decode step over contiguous K/V with ``scaled_dot_product_attention``.

    Args and result as in :func:`dense_decode_grouped`. Uses ``enable_gqa=True``
    when this torch has it; older torch repeats the kv heads instead.
    """
    import torch.nn.functional as F

    b, hq, hkv, d = _check(q, k, v)
    qs = q[:, :, None]  # [B, Hq, 1, D]
    try:
        out = F.scaled_dot_product_attention(qs, k, v, scale=scale, enable_gqa=True)
    except TypeError:  # torch < 2.5: no enable_gqa
        g = hq // hkv
        out = F.scaled_dot_product_attention(
            qs, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), scale=scale
        )
    return out[:, :, 0]  # [B, Hq, D]
