"""store_kv writes exactly the slots it is given and skips padding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kvcache.kernels import store_kv  # noqa: E402

NUM_BLOCKS, BLOCK_SIZE, HKV, D = 4, 4, 2, 3


def _caches(dtype=torch.float32):
    # A sentinel everywhere, so any stray write shows up.
    shape = (NUM_BLOCKS, BLOCK_SIZE, HKV, D)
    return torch.full(shape, -7.0, dtype=dtype), torch.full(shape, -9.0, dtype=dtype)


def test_writes_exact_slots_and_skips_padding():
    k_cache, v_cache = _caches()
    key = torch.randn(4, HKV, D)
    value = torch.randn(4, HKV, D)
    # token 0 -> block 2 offset 1; token 1 is padding; token 2 -> block 0
    # offset 3; token 3 -> the very last slot (block 3 offset 3).
    slots = torch.tensor([9, -1, 3, 15], dtype=torch.int64)
    store_kv(key, value, k_cache, v_cache, slots)

    written = {(2, 1): 0, (0, 3): 2, (3, 3): 3}
    for blk in range(NUM_BLOCKS):
        for off in range(BLOCK_SIZE):
            t = written.get((blk, off))
            if t is None:
                assert (k_cache[blk, off] == -7.0).all(), f"stray K write at {blk},{off}"
                assert (v_cache[blk, off] == -9.0).all(), f"stray V write at {blk},{off}"
            else:
                assert torch.equal(k_cache[blk, off], key[t])
                assert torch.equal(v_cache[blk, off], value[t])


def test_all_padding_writes_nothing():
    k_cache, v_cache = _caches()
    store_kv(torch.randn(2, HKV, D), torch.randn(2, HKV, D), k_cache, v_cache,
             torch.tensor([-1, -1]))
    assert (k_cache == -7.0).all() and (v_cache == -9.0).all()


def test_int32_slots_and_fp16():
    k_cache, v_cache = _caches(torch.float16)
    key = torch.randn(1, HKV, D).half()
    store_kv(key, key, k_cache, v_cache, torch.tensor([5], dtype=torch.int32))
    assert torch.equal(k_cache[1, 1], key[0]) and torch.equal(v_cache[1, 1], key[0])


BAD = {
    "key 2-D": dict(key=torch.zeros(2, HKV * D)),
    "value shape": dict(value=torch.zeros(2, HKV, D + 1)),
    "heads differ from cache": dict(key=torch.zeros(2, HKV + 1, D), value=torch.zeros(2, HKV + 1, D)),
    "dtype": dict(key=torch.zeros(2, HKV, D, dtype=torch.float64)),
    "slots length": dict(slots=torch.tensor([0, 1, 2])),
    "slots float": dict(slots=torch.tensor([0.0, 1.0])),
    "slot past end": dict(slots=torch.tensor([0, NUM_BLOCKS * BLOCK_SIZE])),
    "cache 3-D": dict(k_cache=torch.zeros(NUM_BLOCKS * BLOCK_SIZE, HKV, D)),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise_value_error(name):
    k_cache, v_cache = _caches()
    args = dict(key=torch.zeros(2, HKV, D), value=torch.zeros(2, HKV, D), k_cache=k_cache,
                v_cache=v_cache, slots=torch.tensor([0, 1]))
    args.update(BAD[name])
    with pytest.raises(ValueError):
        store_kv(args["key"], args["value"], args["k_cache"], args["v_cache"], args["slots"])
    assert (k_cache == -7.0).all(), "a rejected call must not write"
