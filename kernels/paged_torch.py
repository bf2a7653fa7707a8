"""Paged attention in plain torch, for prefill and decode.

K/V blocks are gathered with ``index_select(..., out=)`` into a workspace that
lives across calls (allocating the gather buffer on every call costs 2-5x on
CPU, see kernels.md). GQA never copies K/V per query head: q is viewed as
``[Hkv, group, D]`` so one batched matmul per kv head serves its whole group.

* Decode (``cu_seqlens_q=None``): per sequence, ~1 MiB chunks of blocks are
  gathered and multiplied at once, while the chunk is still in cache.
* Prefill: per sequence, all its blocks are gathered, then query tiles run
  against them with the bottom-right causal mask.

On this project's 2-core CPU a torch decode step is still ~1.6-2x the
contiguous grouped matmul (benchmarks/paged_decode.py): the gather reads every
byte the matmul reads, so it alone costs about as much as contiguous attention.

So fp32 decode on CPU goes to the fused C kernel ``kvcache.kernels._paged_cpu``
(kernels/_paged_cpu.c) when it is built: it reads each block's rows in place
through the block table with an online softmax, no gather copy. The torch
chunked path below stays as the fallback and the readable version; it also
runs when ``KVCACHE_PURE_TORCH=1``, for other dtypes and devices, when the last
dimension is not contiguous, when autograd must track the call, and on CPUs
without AVX2+FMA (the kernel's scalar C fallback is slower than torch's ops).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .validate import PagedShapes, check_paged_inputs

if TYPE_CHECKING:
    import torch

# Bytes of attention scores one query tile may hold; bounds prefill memory.
_SCORE_BUDGET = 64 << 20
# Decode gathers K (then V) in chunks of about this many bytes: small enough
# to stay in a core's L2 (2 MiB here) until the matmul reads it.
DECODE_CHUNK_BYTES = 1 << 20


class Workspace:
    """Named scratch buffers reused between calls, grown (never shrunk) on demand.

    One flat buffer per (name, device, dtype); ``get`` hands out a contiguous
    view of the requested shape at its start. Not thread-safe: concurrent
    callers must each use their own ``Workspace``.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
        """A contiguous ``shape`` view into buffer ``name``; contents are stale."""
        import torch

        n = math.prod(shape)
        # Buffers made under torch.inference_mode() are inference tensors, which
        # cannot be written outside it: keep one set per mode.
        key = (name, str(device), dtype, torch.is_inference_mode_enabled())
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            # Grow geometrically so slowly rising context lengths reallocate rarely.
            grown = n if buf is None else max(n, 2 * buf.numel())
            buf = torch.empty(grown, dtype=dtype, device=device)
            self._bufs[key] = buf
        return buf[:n].view(shape)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())

    def pointers(self) -> dict[tuple, int]:
        """Data pointer of every buffer, to check that calls reuse them."""
        return {key: buf.data_ptr() for key, buf in self._bufs.items()}


DEFAULT_WORKSPACE = Workspace()


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


def _decode_sequence(q_b, k_cache, v_cache, row, seq_len, s: PagedShapes, chunk_blocks: int,
                     ws: Workspace, out_b) -> None:
    """One decode query over its sequence, a chunk of blocks at a time.

    Each chunk is gathered into a small buffer and consumed by the matmul
    straight away, while it is still in cache; gathering the whole sequence
    first writes it out to memory and reads it back. Pass 1 computes scores
    chunk by chunk, pass 2 accumulates ``exp(scores - max) @ V`` chunk by chunk
    and divides by the softmax sum once at the end::

        scores: [n_chunks, Hkv, group, C]   C = chunk_blocks * block_size
                 chunk c holds positions c*C .. c*C + C - 1; the last chunk's
                 tail (past seq_len) is set to -inf so it adds exp() = 0

    Args:
        q_b: ``[Hq, D]``, already scaled.
        row: int64 ``[>= n_blocks]`` the sequence's block ids.
        out_b: ``[Hq, D]``, written in place.
    """
    import torch

    bs, hkv, g, d = s.block_size, s.num_kv_heads, s.group, s.head_dim
    dtype, dev = q_b.dtype, q_b.device
    n = -(-seq_len // bs)
    n_chunks, width = -(-n // chunk_blocks), chunk_blocks * bs
    qh = q_b.view(hkv, g, d)  # [Hkv, group, D]: one matmul serves the group
    chunk = ws.get("kv", (chunk_blocks, bs, hkv, d), dtype, dev)
    scores = ws.get("scores", (n_chunks, hkv, g, width), dtype, dev)
    # Views and index slices made once per sequence, not per chunk: at ~1 MiB
    # a chunk, per-op overhead is a visible share of the step.
    ids = row[:n].split(chunk_blocks)
    last = seq_len - (n_chunks - 1) * width  # valid positions in the last chunk
    flat = chunk.view(width, hkv, d)  # [C, Hkv, D]
    tail = chunk[:len(ids[-1])].view(-1, hkv, d)[:last]  # the last chunk; drops
    # slots past seq_len in the last block, which may hold NaN

    k_full, k_tail = flat.permute(1, 2, 0), tail.permute(1, 2, 0)  # [Hkv, D, t]
    s_chunks = scores.unbind(0)  # n_chunks x [Hkv, group, C]
    for c, idx in enumerate(ids):
        torch.index_select(k_cache, 0, idx, out=chunk[:len(idx)])
        if c < n_chunks - 1:
            torch.bmm(qh, k_full, out=s_chunks[c])
        else:
            torch.bmm(qh, k_tail, out=s_chunks[c][:, :, :last])
    if last < width:
        scores[-1, :, :, last:] = float("-inf")  # adds exp() = 0 to the sum
    # Softmax over (chunk, position) without a contiguous copy; fp32 for stability.
    probs = scores.float() if dtype != torch.float32 else scores
    probs.sub_(probs.amax(dim=(0, 3), keepdim=True)).exp_()  # [n_chunks, Hkv, group, C]
    denom = probs.sum(dim=(0, 3))  # [Hkv, group]
    acc = ws.get("acc", (hkv, g, d), torch.float32, dev)
    acc.zero_()
    v_full, v_tail = flat.transpose(0, 1), tail.transpose(0, 1)  # [Hkv, t, D]
    p_chunks = probs.unbind(0)  # n_chunks x [Hkv, group, C]
    for c, idx in enumerate(ids):
        torch.index_select(v_cache, 0, idx, out=chunk[:len(idx)])
        v, p = (v_full, p_chunks[c]) if c < n_chunks - 1 else (v_tail, p_chunks[c][:, :, :last])
        if dtype == torch.float32:
            acc.baddbmm_(p, v)
        else:  # low-precision matmul per chunk, fp32 sum across chunks
            acc += torch.bmm(p.to(dtype), v)
    out_b.view(hkv, g, d).copy_(acc / denom[:, :, None])


def load_paged_cpu():
    """The compiled decode kernel module, or None (not built, or ``KVCACHE_PURE_TORCH=1``)."""
    if os.environ.get("KVCACHE_PURE_TORCH", "") not in ("", "0"):
        return None
    try:
        from . import _paged_cpu
    except ImportError:
        return None
    return _paged_cpu


def c_decode_applies(q, k_cache, v_cache, s: PagedShapes) -> bool:
    """Whether the C kernel can serve this call: CPU fp32 decode, last dims contiguous."""
    import torch

    if not s.is_decode or s.num_seqs == 0 or q.device.type != "cpu" or q.dtype != torch.float32:
        return False
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        return False
    # The kernel builds no autograd graph (the torch path refuses such calls too).
    return not (torch.is_grad_enabled() and (q.requires_grad or k_cache.requires_grad
                                             or v_cache.requires_grad))


def c_decode_kernel(q, k_cache, v_cache, s: PagedShapes):
    """The ``_paged_cpu`` module when it should serve this call by default, else None.

    It must be built and enabled, the call must suit it (:func:`c_decode_applies`),
    and it must have SIMD kernels: its scalar C fallback (no AVX2+FMA) is
    slower than the torch ops.
    """
    if not c_decode_applies(q, k_cache, v_cache, s):
        return None
    ext = load_paged_cpu()
    return ext if ext is not None and ext.simd() != "scalar" else None


def decode_c(ext, q, k_cache, v_cache, block_table, s: PagedShapes, scale: float, out,
             threads: int | None = None, **options) -> None:
    """Decode with the fused C kernel, written into ``out``.

    The kernel reads raw addresses: every tensor must stay alive for the call
    (they do, as arguments), be on the CPU, fp32 (table int32/int64), and have
    a contiguous last dimension; ``s`` must come from ``check_paged_inputs``.

    Args:
        ext: the ``_paged_cpu`` module (:func:`load_paged_cpu`).
        q: ``[B, Hq, D]``.
        k_cache, v_cache: ``[num_blocks, block_size, Hkv, D]``.
        block_table: int32 or int64 ``[B, max_blocks]``.
        out: ``[B, Hq, D]``, written.
        threads: worker threads, default ``torch.get_num_threads()``.
        options: passed to ``ext.decode`` (heads_per_item, tile, prefetch,
            simd, pool), for tests and benchmarks.
    """
    import torch

    table = block_table.contiguous()  # rows table.shape[1] elements apart
    ext.decode(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), out.data_ptr(),
               table.data_ptr(), table.element_size(), table.shape[1], s.seq_lens,
               s.num_blocks, s.num_q_heads, s.num_kv_heads, s.head_dim, s.block_size,
               q.stride()[:2], k_cache.stride()[:3], v_cache.stride()[:3], out.stride()[:2],
               scale, torch.get_num_threads() if threads is None else threads, **options)


def paged_attention_torch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
    workspace: Workspace | None = None,
    decode_chunk_bytes: int | None = DECODE_CHUNK_BYTES,
    use_c: bool | None = None,
) -> torch.Tensor:
    """Paged attention with torch ops; arguments as in ``kvcache.kernels.paged_attention``.

    Args:
        workspace: scratch buffers to reuse; defaults to a module-wide one.
        decode_chunk_bytes: decode gathers this many bytes of K (then V) per
            step; None gathers each whole sequence first (slower on CPU, kept
            for comparison in benchmarks/paged_decode.py).
        use_c: whether CPU fp32 decode may run on the fused C kernel (when it
            is built and ``KVCACHE_PURE_TORCH`` is not set). None: only if
            ``workspace`` and ``decode_chunk_bytes`` are left at their defaults,
            since both configure the torch ops; True: whenever it applies
            (:func:`c_decode_kernel`); False: never.
    """
    import torch

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
    ws = DEFAULT_WORKSPACE if workspace is None else workspace
    out = torch.empty_like(q)  # [T, Hq, D]
    if use_c is None:
        use_c = workspace is None and decode_chunk_bytes == DECODE_CHUNK_BYTES
    ext = c_decode_kernel(q, k_cache, v_cache, s) if use_c else None
    if ext is not None:
        if out.stride(-1) != 1:  # empty_like keeps q's strides
            out = torch.empty(q.shape, dtype=q.dtype)
        decode_c(ext, q, k_cache, v_cache, block_table, s, scale, out)
        return out
    bs, hkv, d = s.block_size, s.num_kv_heads, s.head_dim
    table = block_table.long()  # index_select wants int64 indices
    if s.is_decode and decode_chunk_bytes is not None:
        token_bytes = hkv * d * q.element_size()
        chunk_blocks = max(1, decode_chunk_bytes // (token_bytes * bs))
        # No larger than the longest sequence: short batches keep a small buffer.
        chunk_blocks = min(chunk_blocks, max(1, -(-max(s.seq_lens, default=0) // bs)))
        q_scaled = q * scale  # [B, Hq, D]
        for b, seq_len in enumerate(s.seq_lens):
            _decode_sequence(q_scaled[b], k_cache, v_cache, table[b], seq_len, s, chunk_blocks,
                             ws, out[b])
        return out
    for b, seq_len in enumerate(s.seq_lens):
        q_len = s.q_len(b)
        if q_len == 0:
            continue
        n = -(-seq_len // bs)
        ws_k = ws.get("k", (n, bs, hkv, d), q.dtype, q.device)
        ws_v = ws.get("v", (n, bs, hkv, d), q.dtype, q.device)
        torch.index_select(k_cache, 0, table[b, :n], out=ws_k)  # [n, block_size, Hkv, D]
        torch.index_select(v_cache, 0, table[b, :n], out=ws_v)
        # Slots past seq_len in the last block are never read (may hold NaN).
        k = ws_k.view(n * bs, hkv, d)[:seq_len]  # [L, Hkv, D]
        v = ws_v.view(n * bs, hkv, d)[:seq_len]
        start = s.q_starts[b]
        _attend_sequence(q[start:start + q_len], k, v, s, scale, out[start:start + q_len])
    return out
