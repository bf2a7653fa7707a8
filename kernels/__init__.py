"""Paged-attention kernels over a vLLM-layout KV cache.

Importing this package does not import torch: every entry point imports its
implementation on first call, so ``kvcache replay`` never pays for torch.

Layout (vLLM)::

    k_cache, v_cache : [num_blocks, block_size, Hkv, D]
    block_table      : int32 [B, max_blocks]  row b = sequence b's physical blocks
    seq_lens         : int32 [B]              context length incl. the new tokens
    q                : [T, Hq, D]             queries of all sequences, packed
    cu_seqlens_q     : int32 [B + 1]          query b is q[cu[b]:cu[b+1]]; None = decode

    sequence b, seq_len = 7, q_len = 3, block_size = 4, block_table[b] = [5, 2]
    logical pos :  0  1  2  3 | 4  5  6  .
    physical    :  block 5    | block 2    (block 2's last slot is unused)
    query 0 sees 0..4, query 1 sees 0..5, query 2 sees 0..6  (bottom-right causal)

One layer's step::

    store_kv(k_new, v_new, k_cache, v_cache, slot_mapping)  # new tokens first
    out = paged_attention(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The submodule shares the function's name; importing it here, once, binds the
# package attribute to the function (a later lazy import would rebind it to the
# module). store_kv.py imports torch only inside its functions.
from .store_kv import store_kv

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMPLS",
    "available_impls",
    "paged_attention",
    "reference_paged_attention",
    "store_kv",
]

# Every name `impl=` accepts; "auto" picks one of the others per device.
IMPLS = ("auto", "torch", "reference", "triton", "flex", "flashinfer", "flash_attn")


def available_impls() -> list[str]:
    """Implementations that can run here (not counting "auto").

    Returns:
        Names, "torch" first; empty when torch is not installed.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return []
    from . import backends

    names = ["torch", "reference"]
    if backends.triton_usable():
        names.append("triton")
    names.extend(backends.available_backends())
    return names


def _resolve(impl: str, q: torch.Tensor) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    if getattr(q, "is_cuda", False):
        from . import backends

        return "triton" if backends.triton_importable() else "torch"
    return "torch"


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Causal attention of packed queries over a paged KV cache.

    The new tokens' K/V must already be in the cache (see :func:`store_kv`).

    Args:
        q: ``[T, Hq, D]`` packed queries; Hq is a multiple of Hkv, and query
            head h reads kv head ``h // (Hq // Hkv)``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``, same dtype as q.
        v_cache: same shape and dtype as ``k_cache``.
        block_table: int32 ``[B, max_blocks]``; entries past a sequence's
            last block are ignored.
        seq_lens: int32 ``[B]`` total context length, new tokens included.
        cu_seqlens_q: int32 ``[B + 1]`` cumulative query lengths, or None for
            decode (exactly one query per sequence, T == B).
        scale: softmax scale, default ``1 / sqrt(D)``.
        impl: one of :data:`IMPLS`. "auto" is "torch" on CPU and "triton" on
            CUDA when triton imports, else "torch".

    Returns:
        ``[T, Hq, D]`` in q's dtype. Query i of sequence b attends to kv
        positions ``0 .. seq_len_b - q_len_b + i``.

    Raises:
        ValueError: bad shapes/dtypes, or an unknown ``impl``.
        ImportError: the chosen backend is not installed.
    """
    name = _resolve(impl, q)
    args = (q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale)
    if name == "torch":
        from .paged_torch import paged_attention_torch

        return paged_attention_torch(*args)
    if name == "reference":
        from .reference import reference_paged_attention as ref

        return ref(*args)
    if name == "triton":
        from . import backends

        backends.require_triton(q)
        from .triton_paged import paged_attention_triton

        return paged_attention_triton(*args)
    from . import backends

    return backends.run_backend(name, *args)


def reference_paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The float64 dense oracle; same arguments and result as :func:`paged_attention`."""
    from .reference import reference_paged_attention as ref

    return ref(q, k_cache, v_cache, block_table, seq_lens, cu_seqlens_q, scale)
