"""Where a packed batch's tokens live in a paged KV cache, and the cache itself.

:func:`build_attention_metadata` turns each sequence's block table and token
counts into the positions, slot mapping and block table that
:class:`~kvcache.engine.model.LlamaModel` and
:func:`kvcache.kernels.paged_attention` read; :func:`allocate_kv_caches` makes
the ``(k_cache, v_cache)`` tensors those slots index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kvcache.engine.model_config import ModelConfig


@dataclass(slots=True)
class AttentionMetadata:
    """Where a packed batch's tokens live in the paged KV cache.

    Attributes:
        block_table: int32 ``[B, max_blocks]``: each sequence's physical blocks, in order.
        seq_lens: int32 ``[B]``: each sequence's context length *including* its new tokens.
        slot_mapping: int64 ``[T]``: ``block * block_size + offset`` of each new token; -1 skips it.
        cu_seqlens_q: int32 ``[B + 1]``: where each sequence's new tokens start in
            the packed batch; ``None`` means one new token per sequence (decode).
        logits_indices: int64 ``[N]``: rows of the batch whose logits to return
            (usually each sequence's last token); ``None`` returns all ``T`` rows.
    """

    block_table: torch.Tensor
    seq_lens: torch.Tensor
    slot_mapping: torch.Tensor
    cu_seqlens_q: torch.Tensor | None = None
    logits_indices: torch.Tensor | None = None


def build_attention_metadata(
    block_ids: Sequence[Sequence[int]],
    num_computed: Sequence[int],
    num_new: Sequence[int],
    block_size: int,
    *,
    all_logits: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, AttentionMetadata]:
    """Positions and attention metadata for a batch of sequences.

    Sequence ``i`` already has ``num_computed[i]`` tokens in its blocks and
    brings ``num_new[i]`` more. With ``block_size`` 4, ``block_ids [7, 2, 9]``,
    5 tokens computed and 4 new::

        position   0 1 2 3 | 4 5 6 7 | 8
        block      7       | 2       | 9
        new                    ^ ^ ^   ^    slots 2*4+1, 2*4+2, 2*4+3, 9*4+0

    Args:
        block_ids: each sequence's physical block ids; enough to hold all its tokens.
        num_computed: tokens already in the cache, per sequence.
        num_new: tokens in this batch, per sequence (at least 1).
        block_size: tokens per block.
        all_logits: return logits for every token, not only each sequence's last.
        device: where the tensors go.

    Returns:
        ``positions`` int64 ``[T]`` and the :class:`AttentionMetadata`.

    Raises:
        ValueError: the lists differ in length, a sequence brings no tokens, or
            its blocks cannot hold its tokens.
    """
    if not len(block_ids) == len(num_computed) == len(num_new) > 0:
        raise ValueError("block_ids, num_computed and num_new need one entry per sequence")
    positions: list[int] = []
    slots: list[int] = []
    for blocks, done, new in zip(block_ids, num_computed, num_new, strict=True):
        if new < 1 or done < 0:
            raise ValueError(f"a sequence needs at least one new token and no negative cached count, got {done}+{new}")
        if (done + new) > len(blocks) * block_size:
            raise ValueError(f"{len(blocks)} blocks of {block_size} cannot hold {done + new} tokens")
        for pos in range(done, done + new):
            positions.append(pos)
            slots.append(blocks[pos // block_size] * block_size + pos % block_size)
    width = max(len(b) for b in block_ids)
    # Pad with block 0 (vLLM's null block); the kernel never reads past seq_lens.
    table = [list(b) + [0] * (width - len(b)) for b in block_ids]
    cu = [0]
    for new in num_new:
        cu.append(cu[-1] + new)
    return torch.tensor(positions, dtype=torch.int64, device=device), AttentionMetadata(
        block_table=torch.tensor(table, dtype=torch.int32, device=device),
        seq_lens=torch.tensor([d + n for d, n in zip(num_computed, num_new)], dtype=torch.int32, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        cu_seqlens_q=None if all(n == 1 for n in num_new) else torch.tensor(cu, dtype=torch.int32, device=device),
        logits_indices=None if all_logits else torch.tensor(cu[1:], dtype=torch.int64, device=device) - 1,
    )


def allocate_kv_caches(
    config: ModelConfig,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Zeroed ``(k_cache, v_cache)`` per layer, each ``[num_blocks, block_size, Hkv, D]``."""
    shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    return [
        (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
        for _ in range(config.num_hidden_layers)
    ]
