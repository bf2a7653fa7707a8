"""Write new tokens' keys and values into the paged cache.

A slot is a flat token index into the cache: ``slot = block * block_size +
offset``. Padding tokens carry slot -1 and are skipped, as in vLLM's
``reshape_and_cache``::

    slot_mapping:  [ 37, 38, -1 ]         block_size = 16
                     |   |    `- padding, not written
                     |   `- block 2, offset 6
                     `- block 2, offset 5
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _check(key, value, k_cache, v_cache, slot_mapping) -> None:
    import torch

    for name, t in (("key", key), ("value", value), ("k_cache", k_cache),
                    ("v_cache", v_cache), ("slot_mapping", slot_mapping)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if key.dim() != 3 or value.shape != key.shape:
        raise ValueError(
            f"key and value must both be [T, Hkv, D], got {tuple(key.shape)} and {tuple(value.shape)}"
        )
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be [num_blocks, block_size, Hkv, D], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    if tuple(key.shape[1:]) != tuple(k_cache.shape[2:]):
        raise ValueError(
            f"key is [T, {key.shape[1]}, {key.shape[2]}] but the cache holds "
            f"[.., {k_cache.shape[2]}, {k_cache.shape[3]}] (Hkv, D)"
        )
    if len({key.dtype, value.dtype, k_cache.dtype, v_cache.dtype}) != 1:
        raise ValueError("key, value, k_cache and v_cache must share one dtype")
    if (slot_mapping.dim() != 1 or slot_mapping.shape[0] != key.shape[0]
            or slot_mapping.dtype not in (torch.int32, torch.int64)):
        raise ValueError(
            f"slot_mapping must be an int64 [T={key.shape[0]}] tensor, got "
            f"{slot_mapping.dtype} {tuple(slot_mapping.shape)}"
        )
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    if len({t.device for t in (key, value, k_cache, v_cache, slot_mapping)}) != 1:
        raise ValueError("key, value, caches and slot_mapping must be on one device")


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write ``key[t]``/``value[t]`` to cache slot ``slot_mapping[t]`` in place.

    Args:
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``, written in place.
        v_cache: same shape as ``k_cache``, written in place.
        slot_mapping: int64 ``[T]``; token t goes to block ``slot // block_size``,
            offset ``slot % block_size``. Negative slots are skipped.

    Raises:
        ValueError: shapes, dtypes or devices disagree, or a slot is past the
            end of the cache.
    """
    _check(key, value, k_cache, v_cache, slot_mapping)
    num_blocks, block_size, hkv, d = k_cache.shape
    n_slots = num_blocks * block_size
    # Flat views share storage with the caches: writes land in place.
    k_flat = k_cache.view(n_slots, hkv, d)  # [num_blocks * block_size, Hkv, D]
    v_flat = v_cache.view(n_slots, hkv, d)
    slots = slot_mapping.long()
    keep = slots >= 0
    slots = slots[keep]  # [T'] valid slots only
    if slots.numel() == 0:
        return
    if int(slots.max()) >= n_slots:
        raise ValueError(f"slot_mapping holds a slot >= {n_slots} (num_blocks * block_size)")
    k_flat.index_copy_(0, slots, key[keep])  # key[keep]: [T', Hkv, D]
    v_flat.index_copy_(0, slots, value[keep])
