"""Import-guarded wrappers for third-party attention libraries.

Each backend is used only when its package imports; asking for a missing one
raises ``ImportError`` naming what to install. All wrappers take and return the
vLLM layout of :func:`kvcache.kernels.paged_attention`.

* ``flex``: ``torch.nn.attention.flex_attention`` (torch >= 2.5). Tokens are
  gathered into one packed ``[1, Hkv, sum(L), D]`` sequence and a document
  causal ``mask_mod`` keeps each query inside its own sequence.
* ``flash_attn``: ``flash_attn_with_kvcache(block_table=)`` for decode and
  ``flash_attn_varlen_func(block_table=)`` for prefill (CUDA, fp16/bf16,
  block_size a multiple of 256 on FA2).
* ``flashinfer``: ``BatchPrefillWithPagedKVCacheWrapper`` in NHD layout (CUDA).

The flash_attn and flashinfer paths need a GPU and have not run in this
project's CPU-only CI.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from .validate import check_paged_inputs

if TYPE_CHECKING:
    import torch

_INSTALL = {
    "flex": "torch>=2.5 (torch.nn.attention.flex_attention)",
    "flash_attn": "flash-attn>=2.6 (pip install flash-attn)",
    "flashinfer": "flashinfer (pip install flashinfer-python)",
    "triton": "triton (pip install 'kvcache[triton]')",
}


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def flex_importable() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def triton_importable() -> bool:
    return _has_module("triton")


def triton_usable() -> bool:
    """Triton imports and can launch: a CUDA device, or the CPU interpreter."""
    if not triton_importable():
        return False
    import torch

    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends() -> list[str]:
    """Third-party backends that import here: a subset of flex, flash_attn, flashinfer."""
    names = []
    if flex_importable():
        names.append("flex")
    if _has_module("flash_attn"):
        names.append("flash_attn")
    if _has_module("flashinfer"):
        names.append("flashinfer")
    return names


def require_triton(q: torch.Tensor) -> None:
    """Raise a clear error when the Triton kernel cannot run on q's device."""
    if not triton_importable():
        raise ImportError(f"impl='triton' needs {_INSTALL['triton']}")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            "impl='triton' on CPU tensors needs TRITON_INTERPRET=1 set before "
            "kvcache.kernels.triton_paged is imported"
        )


def run_backend(name: str, q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale):
    """Run third-party backend ``name`` (``flex``, ``flash_attn`` or ``flashinfer``)."""
    runners = {"flex": _run_flex, "flash_attn": _run_flash_attn, "flashinfer": _run_flashinfer}
    if name not in runners:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(runners)}")
    if name not in available_backends():
        raise ImportError(f"impl={name!r} needs {_INSTALL[name]}, which is not installed")
    return runners[name](q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale)


def _token_index(s, block_table):
    """Flat cache slot of every context token, sequences back to back: [sum(L)]."""
    import torch

    pieces = []
    for b, seq_len in enumerate(s.seq_lens):
        pos = torch.arange(seq_len, device=block_table.device)
        pieces.append(block_table[b].long()[pos // s.block_size] * s.block_size + pos % s.block_size)
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def _run_flex(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    dev = q.device
    n_slots = s.num_blocks * s.block_size
    idx = _token_index(s, block_table)  # [S] with S = sum(L)
    # Only each sequence's own tokens are gathered, so unused slots never enter.
    k = k_cache.reshape(n_slots, s.num_kv_heads, s.head_dim).index_select(0, idx)  # [S, Hkv, D]
    v = v_cache.reshape(n_slots, s.num_kv_heads, s.head_dim).index_select(0, idx)
    lens = torch.tensor(s.seq_lens, device=dev)
    q_lens = torch.tensor([s.q_len(b) for b in range(s.num_seqs)], device=dev)
    seqs = torch.arange(s.num_seqs, device=dev)
    kv_doc = torch.repeat_interleave(seqs, lens)  # [S] sequence of each kv token
    q_doc = torch.repeat_interleave(seqs, q_lens)  # [T] sequence of each query
    kv_pos = torch.arange(len(kv_doc), device=dev) - (torch.cumsum(lens, 0) - lens)[kv_doc]
    q_starts = torch.tensor(s.q_starts[:-1], device=dev)
    # Last kv position query t may see: seq_len - q_len + i (bottom-right causal).
    q_limit = (lens - q_lens)[q_doc] + torch.arange(len(q_doc), device=dev) - q_starts[q_doc]

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_doc[q_idx] == kv_doc[kv_idx]) & (kv_pos[kv_idx] <= q_limit[q_idx])

    mask = create_block_mask(mask_mod, None, None, len(q_doc), len(kv_doc), device=str(dev),
                             _compile=False)
    out = flex_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
        block_mask=mask, scale=scale, enable_gqa=s.group > 1,
    )  # [1, Hq, T, D]
    return out[0].transpose(0, 1).contiguous()  # [T, Hq, D]


def _run_flash_attn(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale):
    import torch
    from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    if s.block_size % 256:
        raise ValueError(f"flash_attn needs block_size to be a multiple of 256, got {s.block_size}")
    table, lens = block_table.to(torch.int32), seq_lens.to(torch.int32)
    if s.is_decode:
        # q: [B, 1, Hq, D]; causal with one query = see the whole context.
        out = flash_attn_with_kvcache(q[:, None], k_cache, v_cache, cache_seqlens=lens,
                                      block_table=table, softmax_scale=scale, causal=True)
        return out[:, 0]
    cu_k = torch.zeros(s.num_seqs + 1, dtype=torch.int32, device=q.device)
    cu_k[1:] = torch.cumsum(lens, 0)
    max_q = max((s.q_len(b) for b in range(s.num_seqs)), default=0)
    # FA >= 2.1 aligns the causal mask bottom-right, as kvcache does.
    return flash_attn_varlen_func(q, k_cache, v_cache, cu_seqlens_q.to(torch.int32), cu_k,
                                  max_q, max(s.seq_lens, default=0), softmax_scale=scale,
                                  causal=True, block_table=table)


_FLASHINFER_WORKSPACE: dict[str, torch.Tensor] = {}


def _run_flashinfer(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale):
    import flashinfer
    import torch

    s = check_paged_inputs(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
    dev = q.device
    ws = _FLASHINFER_WORKSPACE.setdefault(str(dev), torch.empty(128 << 20, dtype=torch.uint8,
                                                                   device=dev))
    n_pages = [-(-n // s.block_size) for n in s.seq_lens]
    indices = torch.cat([block_table[b, :n] for b, n in enumerate(n_pages)]).to(torch.int32)
    indptr = torch.tensor([0] + n_pages, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    last = torch.tensor([n - (p - 1) * s.block_size if p else 0
                         for n, p in zip(s.seq_lens, n_pages)], device=dev, dtype=torch.int32)
    qo_indptr = torch.tensor(s.q_starts, device=dev, dtype=torch.int32)
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
    wrapper.plan(qo_indptr, indptr, indices, last, s.num_q_heads, s.num_kv_heads, s.head_dim,
                 s.block_size, causal=True, sm_scale=scale, q_data_type=q.dtype)
    return wrapper.run(q, (k_cache, v_cache))  # [T, Hq, D]
