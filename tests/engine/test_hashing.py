"""Chained block hashing (reference/vllm-prefix-caching.md rules 1-4).

The ``sha256`` expectations are computed here, independently of the engine, from
vLLM's formula::

    NONE_HASH = sha256(pickle.dumps("vllm-none-hash", protocol=HIGHEST))
    h_i       = sha256(pickle.dumps((h_{i-1} or NONE_HASH, tuple(tokens_i), extra_keys_i or None),
                                    protocol=HIGHEST))
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys

import pytest
import xxhash

from kvcache.engine.config import CacheConfig
from kvcache.engine.hashing import (
    SHA256_NONE_HASH,
    XXH3_NONE_HASH,
    block_extra_keys,
    hash_block_sha256,
    hash_block_xxh3,
    hash_token_blocks,
)
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.request import Request

ALGOS = ("xxh3_128", "sha256")
HASHERS = {"xxh3_128": hash_block_xxh3, "sha256": hash_block_sha256}


def vllm_sha256(obj: object) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


VLLM_NONE_HASH = vllm_sha256("vllm-none-hash")


def vllm_chain(tokens: list[int], block_size: int, extra_keys: list[tuple | None]) -> list[bytes]:
    """vLLM's ``hash_request_tokens`` with the ``sha256`` hash, written out by hand."""
    out: list[bytes] = []
    parent = VLLM_NONE_HASH
    for i in range(len(tokens) // block_size):
        block = tuple(tokens[i * block_size : (i + 1) * block_size])
        parent = vllm_sha256((parent, block, extra_keys[i]))
        out.append(parent)
    return out


# --------------------------------------------------------------- sha256 = vLLM
def test_sha256_none_hash_is_vllms() -> None:
    assert SHA256_NONE_HASH == VLLM_NONE_HASH
    assert len(SHA256_NONE_HASH) == 32


def test_sha256_chain_matches_vllm_bit_for_bit() -> None:
    # 2 full blocks of 16 and a 5-token partial tail: exactly 2 digests.
    tokens = [(i * 7919) % 50_000 for i in range(37)]
    got = hash_token_blocks(tokens, 16, "sha256")
    assert got == vllm_chain(tokens, 16, [None, None])
    # Spelled out for block 0, so a shared mistake in vllm_chain cannot hide it.
    assert got[0] == hashlib.sha256(
        pickle.dumps((VLLM_NONE_HASH, tuple(tokens[:16]), None), protocol=pickle.HIGHEST_PROTOCOL)
    ).digest()
    assert all(isinstance(h, bytes) and len(h) == 32 for h in got)


def test_sha256_extra_keys_match_vllm_bit_for_bit() -> None:
    # vLLM order: LoRA name first, then the cache salt, which goes on block 0 only.
    tokens = list(range(100, 148))  # 3 full blocks
    got = hash_token_blocks(tokens, 16, "sha256", cache_salt="org-a", lora_name="lora-x")
    expected = vllm_chain(tokens, 16, [("lora-x", "org-a"), ("lora-x",), ("lora-x",)])
    assert got == expected
    # Salt only: block 0 carries ("org-a",), later blocks carry None (not an empty tuple).
    got_salt = hash_token_blocks(tokens, 16, "sha256", cache_salt="org-a")
    assert got_salt == vllm_chain(tokens, 16, [("org-a",), None, None])


def test_sha256_empty_extra_keys_hash_as_none() -> None:
    # vLLM passes None, never (), when a block has no extra keys.
    tokens = [1, 2, 3, 4]
    assert hash_block_sha256(None, tokens, ()) == vllm_sha256((VLLM_NONE_HASH, (1, 2, 3, 4), None))
    assert hash_block_sha256(None, tokens, None) == vllm_sha256((VLLM_NONE_HASH, (1, 2, 3, 4), None))


# --------------------------------------------------------------- xxh3 format
def test_xxh3_matches_documented_byte_layout() -> None:
    # parent (16 bytes LE) + tokens (uint32 LE); seed = xxh3_128("vllm-none-hash").
    assert XXH3_NONE_HASH == xxhash.xxh3_128_intdigest(b"vllm-none-hash")
    tokens = [0, 1, 70_000, 4_000_000_000, 5, 6, 7, 8]
    h0 = xxhash.xxh3_128_intdigest(XXH3_NONE_HASH.to_bytes(16, "little") + struct.pack("<4I", *tokens[:4]))
    h1 = xxhash.xxh3_128_intdigest(h0.to_bytes(16, "little") + struct.pack("<4I", *tokens[4:]))
    assert hash_token_blocks(tokens, 4, "xxh3_128") == [h0, h1]
    assert all(isinstance(h, int) and 0 <= h < 1 << 128 for h in (h0, h1))


def test_xxh3_fast_path_equals_per_block_function() -> None:
    # hash_token_blocks has a one-buffer fast path when there are no extra keys;
    # it must agree with hash_block_xxh3 applied block by block.
    tokens = [(3 * i) % 11 for i in range(45)]
    expected: list[int] = []
    parent = None
    for i in range(45 // 8):
        parent = hash_block_xxh3(parent, tokens[i * 8 : (i + 1) * 8])
        expected.append(parent)
    assert hash_token_blocks(tokens, 8, "xxh3_128") == expected


def test_hashes_repeat_across_processes() -> None:
    # A fixed seed (not os.urandom / PYTHONHASHSEED) makes runs repeat.
    code = (
        "from kvcache.engine.hashing import hash_token_blocks as h;"
        "print(h(list(range(40)), 16, 'xxh3_128'), h(list(range(40)), 16, 'sha256', cache_salt='o'))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    xxh = hash_token_blocks(list(range(40)), 16, "xxh3_128")
    sha = hash_token_blocks(list(range(40)), 16, "sha256", cache_salt="o")
    here = f"{xxh} {sha}"
    assert out.stdout.strip() == here


# --------------------------------------------------------------- chaining
@pytest.mark.parametrize("algo", ALGOS)
def test_chain_covers_every_earlier_token(algo: str) -> None:
    a = list(range(12))
    b = [99] + a[1:]  # differs only in token 0
    ha, hb = hash_token_blocks(a, 4, algo), hash_token_blocks(b, 4, algo)
    # Blocks 1 and 2 hold identical tokens, but their parents differ.
    assert a[4:] == b[4:]
    assert all(x != y for x, y in zip(ha, hb))
    # Sharing the first 8 tokens shares exactly the first 2 block hashes.
    c = a[:8] + [50, 51, 52, 53]
    hc = hash_token_blocks(c, 4, algo)
    assert hc[:2] == ha[:2] and hc[2] != ha[2]


@pytest.mark.parametrize("algo", ALGOS)
def test_block_hash_depends_on_parent_tokens_and_order(algo: str) -> None:
    fn = HASHERS[algo]
    h = fn(None, [1, 2, 3, 4])
    assert fn(None, [1, 2, 3, 4]) == h  # deterministic
    assert fn(None, [4, 3, 2, 1]) != h
    assert fn(h, [1, 2, 3, 4]) != h
    # None means "start of prompt", i.e. NONE_HASH as the parent.
    none_hash = XXH3_NONE_HASH if algo == "xxh3_128" else SHA256_NONE_HASH
    assert fn(none_hash, [1, 2, 3, 4]) == h


@pytest.mark.parametrize("algo", ALGOS)
def test_partial_tail_is_never_hashed(algo: str) -> None:
    assert hash_token_blocks([], 16, algo) == []
    assert hash_token_blocks(list(range(15)), 16, algo) == []
    assert len(hash_token_blocks(list(range(16)), 16, algo)) == 1
    full = hash_token_blocks(list(range(32)), 16, algo)
    # Any tail of 1..15 tokens adds nothing and leaves the full blocks alone.
    for extra in (1, 7, 15):
        tokens = list(range(32)) + [1000 + i for i in range(extra)]
        assert hash_token_blocks(tokens, 16, algo) == full


# --------------------------------------------------------------- extra keys
def test_block_extra_keys_order_and_placement() -> None:
    assert block_extra_keys(0, None, None) is None
    assert block_extra_keys(0, "org", None) == ("org",)
    assert block_extra_keys(1, "org", None) is None  # salt on block 0 only
    assert block_extra_keys(0, None, "lora") == ("lora",)
    assert block_extra_keys(5, None, "lora") == ("lora",)  # LoRA on every block
    assert block_extra_keys(0, "org", "lora") == ("lora", "org")  # LoRA first
    assert block_extra_keys(2, "org", "lora") == ("lora",)


@pytest.mark.parametrize("algo", ALGOS)
def test_cache_salt_only_keys_the_first_block(algo: str) -> None:
    fn = HASHERS[algo]
    tokens = list(range(12))
    salted = hash_token_blocks(tokens, 4, algo, cache_salt="org-a")
    h0 = fn(None, tokens[:4], ("org-a",))
    h1 = fn(h0, tokens[4:8], None)
    h2 = fn(h1, tokens[8:12], None)
    assert salted == [h0, h1, h2]
    # Different orgs (and no org) share nothing, because block 0 differs and the chain carries it.
    other = hash_token_blocks(tokens, 4, algo, cache_salt="org-b")
    plain = hash_token_blocks(tokens, 4, algo)
    assert not set(salted) & set(other)
    assert not set(salted) & set(plain)
    assert not set(other) & set(plain)


@pytest.mark.parametrize("algo", ALGOS)
def test_lora_keys_every_block(algo: str) -> None:
    fn = HASHERS[algo]
    tokens = list(range(12))
    lora = hash_token_blocks(tokens, 4, algo, lora_name="L")
    h0 = fn(None, tokens[:4], ("L",))
    h1 = fn(h0, tokens[4:8], ("L",))
    h2 = fn(h1, tokens[8:12], ("L",))
    assert lora == [h0, h1, h2]
    # Even from the same parent, a LoRA block differs from a base-model block.
    assert fn(h0, tokens[4:8], ("L",)) != fn(h0, tokens[4:8], None)
    other = hash_token_blocks(tokens, 4, algo, lora_name="M")
    plain = hash_token_blocks(tokens, 4, algo)
    assert not set(lora) & set(other)
    assert not set(lora) & set(plain)


# --------------------------------------------------------------- extending a chain
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(("salt", "lora"), [(None, None), ("org", None), (None, "L"), ("org", "L")])
def test_extending_a_chain_equals_hashing_the_whole(algo: str, salt: str | None, lora: str | None) -> None:
    bs = 4
    tokens = [(i * 5) % 9 for i in range(22)]  # 5 full blocks + 2-token tail
    whole = hash_token_blocks(tokens, bs, algo, cache_salt=salt, lora_name=lora)
    assert len(whole) == 5
    for k in range(6):
        parent = whole[k - 1] if k else None
        rest = hash_token_blocks(
            tokens[k * bs :], bs, algo, cache_salt=salt, lora_name=lora, parent=parent, start_block=k
        )
        assert rest == whole[k:], f"extending from block {k}"
    # In two stages: hash the first 3 blocks, then extend by the remaining tokens.
    first = hash_token_blocks(tokens[:12], bs, algo, cache_salt=salt, lora_name=lora)
    more = hash_token_blocks(tokens[12:], bs, algo, cache_salt=salt, lora_name=lora, parent=first[-1], start_block=3)
    assert first + more == whole


# --------------------------------------------------------------- algorithm choice
def _requests(algo: str) -> list[Request]:
    # Two orgs, shared system prefix, a conversation that extends itself, exact repeats.
    system = list(range(20))
    prompts = [
        ("r0", system + [100, 101, 102], None, 5),
        ("r1", system + [200, 201], None, 3),
        ("r2", system + [100, 101, 102] + [7] * 5 + [300, 301, 302, 303, 304], None, 2),
        ("r3", system + [100, 101, 102], "org-b", 1),
        ("r4", system + [100, 101, 102], "org-b", 1),
        ("r5", list(range(50, 90)), None, 1),
        ("r6", system + [100, 101, 102], None, 1),
        ("r7", list(range(50, 90)) + [1, 2, 3], None, 4),
    ]
    out = []
    for rid, prompt, org, n_out in prompts:
        tokens = prompt + [7] * n_out
        keys = hash_token_blocks(tokens, 4, algo, cache_salt=org)
        out.append(Request(rid, keys, len(prompt), len(prompt), n_out, len(prompt) - 1, org=org))
    return out


@pytest.mark.parametrize("num_blocks", [None, 40, 12, 8])
@pytest.mark.parametrize("free_order", ["current", "classic"])
def test_xxh3_and_sha256_give_identical_hits(num_blocks: int | None, free_order: str, implementation: str) -> None:
    results = {}
    for algo in ALGOS:
        cfg = CacheConfig(block_size=4, num_blocks=num_blocks, hash_algo=algo, free_order=free_order)
        replayer = SequentialReplayer(cfg, implementation=implementation)
        assert replayer.implementation == implementation
        results[algo] = [
            (r.request_id, r.cached_tokens, r.hit_blocks, r.first_miss_block, r.rejected)
            for r in replayer.run(_requests(algo))
        ]
        results[algo + "-evicted"] = replayer.stats.evicted_blocks
        # The same block ids end up free, in the same order, whatever the digest type.
        results[algo + "-queue"] = replayer.free_queue()
    assert results["xxh3_128"] == results["sha256"]
    assert results["xxh3_128-evicted"] == results["sha256-evicted"]
    assert results["xxh3_128-queue"] == results["sha256-queue"]
    # The trace is not trivial: something hits, and the org-b repeat hits (r4 after r3).
    hits = {rid: cached for rid, cached, *_ in results["sha256"]}
    assert sum(hits.values()) > 0
    if num_blocks is None:
        assert hits == {"r0": 0, "r1": 20, "r2": 24, "r3": 0, "r4": 20, "r5": 0, "r6": 20, "r7": 40}
