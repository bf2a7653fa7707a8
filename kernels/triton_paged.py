"""Paged attention as one Triton kernel, for prefill and decode.

One program handles (sequence, kv head, query tile). Its rows are the tile's
query tokens times the kv head's group of query heads, so GQA never copies K/V.
It walks the sequence's KV in tiles of ``BLOCK_N`` token positions, looks each
position's physical block up in ``block_table`` and keeps an online softmax::

    rows (BLOCK_M tokens x GROUP_P2 heads)      kv positions, BLOCK_N at a time
    tok 0 g 0 | tok 0 g 1 | ... | tok 1 g 0     pos -> block_table[b, pos // block_size]
                                                       + pos % block_size

Looking blocks up per position (rather than per block) lets any block size,
even 1, feed ``tl.dot`` tiles of at least 16 positions.

Runs on CPU tensors under ``TRITON_INTERPRET=1``. That variable is read when
``@triton.jit`` runs, i.e. when this module is imported, so it must be set
before the first import. Dots run in fp32 with ``input_precision="ieee"``:
fp16/bf16 are upcast after loading (bf16 ``tl.dot`` is wrong in the
interpreter, triton-lang/triton#11584).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import triton
import triton.language as tl

from .validate import check_paged_inputs

if TYPE_CHECKING:
    import torch

# What @triton.jit saw when it ran below; CPU launches need it.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

BLOCK_N = 16  # kv positions per step; 16 is the smallest tl.dot tile on GPUs


@triton.jit
def _paged_attention_kernel(
    Q, K, V, O, BT, SEQ_LENS, CU_Q, scale,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
    block_size,
    HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, GROUP_P2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    tile = tl.program_id(2)
    q_start = tl.load(CU_Q + b)
    q_len = tl.load(CU_Q + b + 1) - q_start
    if tile * BLOCK_M < q_len:
        seq_len = tl.load(SEQ_LENS + b)
        ctx = seq_len - q_len  # bottom-right causal: query i sees 0 .. ctx + i

        rows = tl.arange(0, BLOCK_M * GROUP_P2)
        tok = tile * BLOCK_M + rows // GROUP_P2  # query index within the sequence
        g = rows % GROUP_P2
        row_ok = (tok < q_len) & (g < GROUP)
        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM

        # q: [ROWS, BLOCK_D] in fp32, pre-scaled
        q_ptr = (Q + (q_start + tok)[:, None].to(tl.int64) * stride_qt
                 + (kvh * GROUP + g)[:, None] * stride_qh + d[None, :])
        q = tl.load(q_ptr, mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        q = q * scale

        m_i = tl.full([BLOCK_M * GROUP_P2], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M * GROUP_P2], tl.float32)
        acc = tl.zeros([BLOCK_M * GROUP_P2, BLOCK_D], tl.float32)

        # The tile's last query sees kv positions < kv_end; never past seq_len.
        kv_end = ctx + tl.minimum(q_len, (tile + 1) * BLOCK_M)
        for start in range(0, kv_end, BLOCK_N):
            pos = start + tl.arange(0, BLOCK_N)
            pos_ok = pos < kv_end
            blk = tl.load(BT + b.to(tl.int64) * stride_bt + pos // block_size,
                          mask=pos_ok, other=0)
            # int64: blocks * stride overflows int32 in large caches
            kv_off = (blk.to(tl.int64) * stride_kb + (pos % block_size) * stride_ks
                      + kvh * stride_kh)
            kv_mask = pos_ok[:, None] & d_ok[None, :]
            k = tl.load(K + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            k = k.to(tl.float32)  # [BLOCK_N, BLOCK_D]
            s = tl.dot(q, tl.trans(k), input_precision="ieee")  # [ROWS, BLOCK_N]
            allowed = pos_ok[None, :] & (pos[None, :] <= ctx + tok[:, None])
            s = tl.where(allowed, s, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(s, 1))
            # A row with nothing allowed yet (padding rows) keeps m = -inf; use 0
            # there so exp() sees -inf - 0 rather than NaN from -inf - -inf.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + kv_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
            m_i = m_new

        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        o_ptr = (O + (q_start + tok)[:, None].to(tl.int64) * stride_ot
                 + (kvh * GROUP + g)[:, None] * stride_oh + d[None, :])
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def paged_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Paged attention with the Triton kernel; arguments as in ``paged_attention``.

    Raises:
        ValueError: bad inputs, or CPU tensors without ``TRITON_INTERPRET=1``.
    """
    import torch

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    if not q.is_cuda and not INTERPRETED:
        raise ValueError("Triton on CPU tensors needs TRITON_INTERPRET=1 before this module "
                         "is imported")
    scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
    # The kernel assumes unit stride along D and shared K/V strides.
    q, k_cache, v_cache = q.contiguous(), k_cache.contiguous(), v_cache.contiguous()
    cu = torch.tensor(s.q_starts, dtype=torch.int32, device=q.device)  # [B + 1]
    lens = seq_lens.to(torch.int32).contiguous()  # [B]
    table = block_table.to(torch.int32).contiguous()  # [B, max_blocks]
    out = torch.empty_like(q)  # [T, Hq, D]
    max_q = max((s.q_len(b) for b in range(s.num_seqs)), default=0)
    if max_q == 0:
        return out
    group_p2 = triton.next_power_of_2(s.group)
    # At least 16 rows for tl.dot on GPUs; one token per tile when the group fills it.
    block_m = max(1, 16 // group_p2)
    if max_q > 1:
        block_m = max(block_m, min(16, triton.next_power_of_2(max_q)))
    grid = (s.num_seqs, s.num_kv_heads, triton.cdiv(max_q, block_m))
    _paged_attention_kernel[grid](
        q, k_cache, v_cache, out, table, lens, cu, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        table.stride(0), out.stride(0), out.stride(1),
        s.block_size,
        HEAD_DIM=s.head_dim, GROUP=s.group, GROUP_P2=group_p2,
        BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_D=max(16, triton.next_power_of_2(s.head_dim)),
    )
    return out
