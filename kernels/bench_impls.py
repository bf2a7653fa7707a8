"""The implementations ``kvcache bench`` times, and why one cannot run here; torch only.

Paged ones go through ``kvcache.kernels.paged_attention(impl=...)`` on the
paged inputs; the dense baselines read the contiguous copy of the same K/V::

    dense_sdpa     decode: dense.dense_decode_sdpa      prefill: SDPA, is_causal or a bottom-right mask
    dense_grouped  decode: dense.dense_decode_grouped   prefill: grouped matmuls in query tiles

Each becomes a :class:`Runner`: the zero-argument call to time, and how to
read its output as the packed ``[T, Hq, D]`` the oracle checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bench_cases import BenchCase, BenchShape

if TYPE_CHECKING:
    import torch

PAGED_IMPLS = ("torch", "triton", "flex", "flashinfer", "flash_attn")
DENSE_IMPLS = ("dense_sdpa", "dense_grouped")
KNOWN_IMPLS = PAGED_IMPLS + DENSE_IMPLS
# flex is opt-in: without torch.compile it materialises the packed score matrix.
DEFAULT_IMPLS = ("torch", "triton", "flashinfer", "flash_attn", "dense_sdpa", "dense_grouped")
# Bytes of scores one query tile of the grouped prefill baseline may hold.
_SCORE_BUDGET = 64 << 20

# A paged-attention callable: (q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q) -> out.
PagedFn = Callable[..., "torch.Tensor"]


@dataclass(slots=True)
class Runner:
    """A zero-argument call to time, and how to read its output as ``[T, Hq, D]``."""

    fn: Callable[[], Any]
    packed: Callable[[Any], Any] = lambda out: out


def _bottom_right_mask(q_len: int, ctx: int, device: Any) -> torch.Tensor:
    """bool ``[q_len, ctx]``: query i sees keys ``0 .. ctx - q_len + i``."""
    import torch

    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(ctx, device=device)[None, :]
    return j <= (ctx - q_len) + i


def dense_prefill_sdpa(q4: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None) -> torch.Tensor:
    """Contiguous prefill with SDPA: q4 ``[B, Hq, q_len, D]``, k/v ``[B, Hkv, L, D]``.

    ``mask`` is the bottom-right causal mask, or None when q_len == L (then
    ``is_causal`` says the same and lets fused kernels run).
    """
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q4, k, v, attn_mask=mask, is_causal=mask is None,
                                          enable_gqa=True)  # [B, Hq, q_len, D]


def dense_prefill_grouped(q4: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Contiguous prefill as grouped matmuls in query tiles (scores bounded to 64 MiB).

    q4 ``[B, Hq, q_len, D]``, k/v ``[B, Hkv, L, D]``; returns ``[B, Hq, q_len, D]``.
    No kv head is repeated: q is viewed as ``[B, Hkv, group * tile, D]``.
    """
    import torch

    b, hq, q_len, d = q4.shape
    hkv, ctx = k.shape[1], k.shape[2]
    g = hq // hkv
    out = torch.empty_like(q4)
    qs = q4 * (1.0 / math.sqrt(d))
    tile = max(1, _SCORE_BUDGET // max(1, 4 * b * hq * ctx))
    for i0 in range(0, q_len, tile):
        i1 = min(q_len, i0 + tile)
        t, n_kv = i1 - i0, ctx - q_len + i1  # the tile's last query sees keys 0 .. n_kv - 1
        qg = qs[:, :, i0:i1].reshape(b, hkv, g * t, d)  # [B, Hkv, group * t, D]
        scores = torch.matmul(qg, k[:, :, :n_kv].transpose(-1, -2))  # [B, Hkv, group * t, n_kv]
        masked = ~_bottom_right_mask(q_len, ctx, q4.device)[i0:i1, :n_kv]  # [t, n_kv]
        scores.view(b, hkv, g, t, n_kv).masked_fill_(masked, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        out[:, :, i0:i1] = torch.matmul(probs, v[:, :, :n_kv]).view(b, hq, t, d)
    return out


def _dense_runner(name: str, case: BenchCase) -> Runner:
    from .dense import dense_decode_grouped, dense_decode_sdpa

    s = case.shape
    if s.op == "decode":
        qd = case.q  # [B, Hq, D]: one token per sequence
        fn = dense_decode_sdpa if name == "dense_sdpa" else dense_decode_grouped
        return Runner(lambda: fn(qd, case.k, case.v))
    # [T, Hq, D] -> [B, Hq, q_len, D], made contiguous outside the timed call
    q4 = case.q.view(s.batch, s.q_len, s.heads_q, s.head_dim).transpose(1, 2).contiguous()

    def packed(out: Any) -> Any:  # [B, Hq, q_len, D] -> [T, Hq, D]
        return out.transpose(1, 2).reshape(s.tokens, s.heads_q, s.head_dim)

    if name == "dense_grouped":
        return Runner(lambda: dense_prefill_grouped(q4, case.k, case.v), packed)
    mask = None if s.q_len == s.context else _bottom_right_mask(s.q_len, s.context, case.q.device)
    return Runner(lambda: dense_prefill_sdpa(q4, case.k, case.v, mask), packed)


def skip_reason(name: str, shape: BenchShape, device: str, extra_impls: dict[str, PagedFn]) -> str | None:
    """Why ``name`` cannot run on ``shape`` here, or None when it can."""
    if name in extra_impls or name in DENSE_IMPLS or name == "torch":
        return None
    if name not in PAGED_IMPLS:
        return f"unknown implementation; choose from {', '.join(KNOWN_IMPLS)}"
    from . import available_impls, backends

    cuda = device.startswith("cuda")
    if name == "triton":
        if not backends.triton_importable():
            return "triton is not installed (pip install 'kvcache[triton]')"
        if not cuda:
            return "triton on CPU runs only in the TRITON_INTERPRET=1 interpreter, too slow to time"
        return None
    if name not in available_impls():
        return f"{name} is not installed"
    if name in ("flashinfer", "flash_attn"):
        if not cuda:
            return f"{name} needs a CUDA device (--gpu)"
        if shape.dtype == "fp32":
            return f"{name} runs fp16/bf16 only"
        if name == "flash_attn" and shape.block_size % 256:
            return f"flash_attn needs a block size that is a multiple of 256, got {shape.block_size}"
    return None


def make_runner(name: str, case: BenchCase, extra_impls: dict[str, PagedFn] | None = None) -> Runner:
    """The timed call of implementation ``name`` on ``case``.

    ``extra_impls`` maps more names to paged-attention callables (the
    arguments of ``kvcache.kernels.paged_attention``, ``impl`` excepted).
    """
    extra = extra_impls or {}
    if name in extra:
        fn = extra[name]
        return Runner(lambda: fn(*case.args()))
    if name in DENSE_IMPLS:
        return _dense_runner(name, case)
    from . import paged_attention

    return Runner(lambda: paged_attention(*case.args(), impl=name))
