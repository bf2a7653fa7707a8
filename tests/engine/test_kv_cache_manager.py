"""KVCacheManager and SequentialReplayer, in the style of vLLM's test_prefix_caching.py.

Tiny pools, steps narrated in comments, and after each step the exact block ids,
ref counts and the whole free queue (head first). Block 0 is the null block.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from kvcache.engine.config import CacheConfig
from kvcache.engine.errors import ConfigError, KVCacheError
from kvcache.engine.hashing import hash_token_blocks
from kvcache.engine.kv_cache_manager import KVCacheManager
from kvcache.engine.replay import SequentialReplayer
from kvcache.engine.request import Request


def make_request(
    request_id: str,
    prompt: Sequence[int],
    output: Sequence[int] = (),
    block_size: int = 4,
    cache_salt: str | None = None,
    algo: str = "xxh3_128",
) -> Request:
    """A token request: keys cover the prompt and its output; the hit is capped at len - 1."""
    tokens = list(prompt) + list(output)
    keys = hash_token_blocks(tokens, block_size, algo, cache_salt=cache_salt)
    return Request(
        request_id=request_id,
        block_keys=keys,
        prompt_tokens=len(prompt),
        kv_prompt_tokens=len(prompt),
        output_tokens=len(output),
        hit_cap_tokens=len(prompt) - 1,
        org=cache_salt,
    )


def run_once(mgr: KVCacheManager, req: Request) -> tuple[list[int], int, list[int] | None]:
    """Look up, allocate the whole request (prompt + output - 1) and return (hits, hit tokens, new blocks)."""
    hits, n_hit = mgr.get_computed_blocks(req)
    new = mgr.allocate_slots(req, req.num_kv_tokens - n_hit, hits, n_hit)
    return hits, n_hit, new


def refs(mgr: KVCacheManager) -> list[int]:
    return list(mgr.pool.ref_cnt)


# ------------------------------------------------------------------ prefill / free
@pytest.mark.parametrize(
    ("free_order", "queue_after_free"),
    [("current", [3, 4, 5, 6, 7, 8, 9, 2, 1]), ("classic", [4, 5, 6, 7, 8, 9, 3, 2, 1])],
)
def test_prefill_then_free(free_order: str, queue_after_free: list[int]) -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4, free_order=free_order))
    pool = mgr.pool
    # Step 1: a 10-token prompt = |0..3|4..7|8 9 _ _|: two full blocks and a partial one.
    req = make_request("0", range(10))
    assert mgr.get_computed_blocks(req) == ([], 0)
    assert mgr.allocate_slots(req, 10) == [1, 2, 3]
    assert mgr.req_to_blocks["0"] == [1, 2, 3]
    assert refs(mgr) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9]
    # Full blocks get their hashes; the partial block does not.
    assert pool.block_hash[1:4] == [req.block_keys[0], req.block_keys[1], None]
    assert pool.cached == {req.block_keys[0]: 1, req.block_keys[1]: 2}
    # Step 2: free tail first.
    mgr.free(req)
    assert "0" not in mgr.req_to_blocks
    assert refs(mgr) == [1] + [0] * 9
    assert pool.free_queue() == queue_after_free
    assert pool.cached == {req.block_keys[0]: 1, req.block_keys[1]: 2}


def test_prefix_hit_on_freed_blocks() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool
    # Step 1: request 0 computes |0..3|4..7|8 9| and finishes.
    req0 = make_request("0", range(10))
    run_once(mgr, req0)
    mgr.free(req0)
    assert pool.free_queue() == [3, 4, 5, 6, 7, 8, 9, 2, 1]
    # Step 2: request 1 shares the first 8 tokens: |0..3|4..7|20 21 22|.
    req1 = make_request("1", [*range(8), 20, 21, 22])
    hits, n_hit = mgr.get_computed_blocks(req1)
    assert (hits, n_hit) == ([1, 2], 8)
    # The hits are free, so they count against the supply; then they are touched
    # (0 -> 1, out of the queue) and one new block is popped from the head.
    assert mgr.allocate_slots(req1, 3, hits, n_hit) == [3]
    assert mgr.req_to_blocks["1"] == [1, 2, 3]
    # As in vLLM, admission records the hit tokens as computed; the scheduler
    # advances num_computed_tokens by the scheduled tokens after the step.
    assert req1.num_computed_tokens == 8
    assert refs(mgr) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9]
    assert pool.num_evicted == 0  # block 3 carried no hash
    # Step 3: free: the new partial block goes to the head, the hits to the tail.
    mgr.free(req1)
    assert pool.free_queue() == [3, 4, 5, 6, 7, 8, 9, 2, 1]


def test_concurrent_requests_share_hit_blocks() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool
    # Step 1: request 0 holds |0..3|4..7|8..11| = blocks [1, 2, 3], all hashed.
    req0 = make_request("0", range(12))
    assert run_once(mgr, req0) == ([], 0, [1, 2, 3])
    # Step 2: request 1 = the same 12 tokens + 1; it hits all three while they are held.
    req1 = make_request("1", [*range(12), 50])
    assert run_once(mgr, req1) == ([1, 2, 3], 12, [4])
    assert refs(mgr) == [1, 2, 2, 2, 1, 0, 0, 0, 0, 0]
    assert pool.free_queue() == [5, 6, 7, 8, 9]
    # Step 3: request 0 finishes: its blocks are still held by request 1.
    mgr.free(req0)
    assert refs(mgr) == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert pool.free_queue() == [5, 6, 7, 8, 9]
    # Step 4: request 1 finishes: tail first -> 4 (unhashed) to the head, 3, 2, 1 to the tail.
    mgr.free(req1)
    assert refs(mgr) == [1] + [0] * 9
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9, 3, 2, 1]


# ------------------------------------------------------------------ the n - 1 cap
@pytest.mark.parametrize(
    ("length", "expected_hit"),
    [(64, 48), (48, 32), (32, 16), (17, 16), (16, 0), (15, 0), (1, 0)],
)
def test_exact_repeat_hit_is_capped_at_n_minus_1(length: int, expected_hit: int) -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=16))
    prompt = [(7 * i) % 101 for i in range(length)]
    first = make_request("a", prompt, block_size=16)
    assert run_once(mgr, first)[:2] == ([], 0)
    mgr.free(first)
    # Every full block of the first run is cached ...
    assert mgr.pool.cached_hashes() == length // 16
    # ... but the repeat recomputes at least its last token, block-aligned.
    repeat = make_request("b", prompt, block_size=16)
    hits, n_hit = mgr.get_computed_blocks(repeat)
    assert n_hit == expected_hit
    assert hits == list(range(1, expected_hit // 16 + 1))


def test_longer_prompt_hits_every_shared_full_block() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=16))
    prompt = list(range(64))
    first = make_request("a", prompt, block_size=16)
    run_once(mgr, first)
    mgr.free(first)
    longer = make_request("b", [*prompt, 999], block_size=16)
    assert mgr.get_computed_blocks(longer) == ([1, 2, 3, 4], 64)


def test_partial_last_block_is_never_cached() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool
    # Step 1: |0..3|4..7|8 9| -> block 3 is partial and unhashed.
    req0 = make_request("0", range(10))
    run_once(mgr, req0)
    mgr.free(req0)
    assert pool.block_hash[3] is None
    assert pool.cached_hashes() == 2
    # Step 2: a prompt that completes that block (|8 9 10 11|) hits only the 2 full blocks.
    req1 = make_request("1", [*range(12), 77])
    hits, n_hit = mgr.get_computed_blocks(req1)
    assert (hits, n_hit) == ([1, 2], 8)
    # It pops the unhashed block 3 from the head for |8..11|, caches it, then block 4.
    assert mgr.allocate_slots(req1, 5, hits, n_hit) == [3, 4]
    assert pool.block_hash[3] == req1.block_keys[2]
    assert pool.block_hash[4] is None


def test_cache_salt_isolates_orgs() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=20, block_size=4))
    prompt = list(range(13))
    # Step 1: org a computes the prompt.
    a1 = make_request("a1", prompt, cache_salt="org-a")
    assert run_once(mgr, a1) == ([], 0, [1, 2, 3, 4])
    mgr.free(a1)
    # Step 2: org b and the salt-less tenant miss entirely, even on block 0.
    b1 = make_request("b1", prompt, cache_salt="org-b")
    assert mgr.get_computed_blocks(b1) == ([], 0)
    none = make_request("n1", prompt)
    assert mgr.get_computed_blocks(none) == ([], 0)
    # Step 3: org a again hits its own blocks.
    a2 = make_request("a2", prompt, cache_salt="org-a")
    assert mgr.get_computed_blocks(a2) == ([1, 2, 3], 12)


# ------------------------------------------------------------------ freed blocks stay hittable
def test_freed_block_stays_hittable_until_reallocated() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool
    # Step 1: A = |0..3|4..7|8| -> blocks [1, 2] hashed, 3 partial; then freed.
    a = make_request("A", range(9))
    run_once(mgr, a)
    mgr.free(a)
    assert pool.free_queue() == [3, 4, 5, 6, 7, 8, 9, 2, 1]
    # Step 2: B (unrelated, 6 full blocks + 1 token) takes 7 blocks from the head,
    # all unhashed: no eviction, and A's cached blocks are untouched.
    b = make_request("B", [100 + i for i in range(25)])
    assert run_once(mgr, b) == ([], 0, [3, 4, 5, 6, 7, 8, 9])
    assert pool.free_queue() == [2, 1]
    assert pool.num_evicted == 0
    # Step 3: A's repeat still hits the free blocks 1 and 2.
    a2 = make_request("A2", range(9))
    hits, n_hit = mgr.get_computed_blocks(a2)
    assert (hits, n_hit) == ([1, 2], 8)
    # It needs one more block, and its own 2 free hits count against the supply
    # of 2: 1 + 2 > 2, so the allocation fails and nothing changes.
    assert mgr.allocate_slots(a2, 1, hits, n_hit) is None
    assert refs(mgr) == [1, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert pool.free_queue() == [2, 1]
    assert a2.num_computed_tokens == 0
    mgr.free(a2)
    # Step 4: once B finishes there is room: the hits go 0 -> 1 and leave the queue,
    # and the new block comes from the head (B's unhashed tail block 9).
    mgr.free(b)
    # B's tail: the unhashed 9 to the head, the hashed 8..3 (deepest first) to the tail.
    assert pool.free_queue() == [9, 2, 1, 8, 7, 6, 5, 4, 3]
    assert mgr.allocate_slots(a2, 1, hits, n_hit) == [9]
    assert refs(mgr) == [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert pool.free_queue() == [8, 7, 6, 5, 4, 3]
    mgr.free(a2)
    assert pool.free_queue() == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    # Step 5: C takes 8 blocks: 9, then B's cached 8..3 (6 evictions), then A's block 2.
    c = make_request("C", [500 + i for i in range(29)])
    assert run_once(mgr, c)[2] == [9, 8, 7, 6, 5, 4, 3, 2]
    assert pool.num_evicted == 7
    # Block 2 was reallocated, so A's repeat now hits only block 1.
    a3 = make_request("A3", range(9))
    assert mgr.get_computed_blocks(a3) == ([1], 4)


def test_request_never_evicts_its_own_hits() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=5, block_size=4))
    pool = mgr.pool
    # Step 1: A = |0..3|4..7|8..11| -> [1, 2, 3], then freed: queue [4, 3, 2, 1].
    a = make_request("A", range(12))
    assert run_once(mgr, a)[2] == [1, 2, 3]
    mgr.free(a)
    assert pool.free_queue() == [4, 3, 2, 1]
    # Step 2: D (8 unrelated tokens) pops 4 and 3 (evicting A's block 3), then frees.
    d = make_request("D", [40, 41, 42, 43, 44, 45, 46, 47])
    assert run_once(mgr, d)[2] == [4, 3]
    assert pool.num_evicted == 1
    mgr.free(d)
    assert pool.free_queue() == [2, 1, 3, 4]
    # Step 3: B shares A's first 8 tokens and needs 2 more blocks. Its hits 2, 1 sit
    # at the head of the queue; they are touched before anything is popped, so the
    # new blocks are 3 and 4 (evicting D's), never B's own hits.
    b = make_request("B", [*range(8), 60, 61, 62, 63, 64])
    hits, n_hit = mgr.get_computed_blocks(b)
    assert (hits, n_hit) == ([1, 2], 8)
    assert mgr.allocate_slots(b, 5, hits, n_hit) == [3, 4]
    assert mgr.req_to_blocks["B"] == [1, 2, 3, 4]
    assert refs(mgr) == [1, 1, 1, 1, 1]
    assert pool.free_queue() == []
    assert pool.num_evicted == 3
    assert pool.get_cached_block(a.block_keys[0]) == 1
    assert pool.get_cached_block(a.block_keys[1]) == 2
    assert pool.get_cached_block(d.block_keys[0]) is None


def test_allocate_slots_returns_none_when_blocks_run_out() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=4, block_size=4))
    pool = mgr.pool
    # 13 tokens need 4 blocks; only 3 are usable.
    big = make_request("big", range(13))
    assert mgr.allocate_slots(big, 13) is None
    assert pool.free_queue() == [1, 2, 3]
    assert refs(mgr) == [1, 0, 0, 0]
    assert big.num_computed_tokens == 0
    mgr.free(big)
    # 12 tokens fit exactly.
    ok = make_request("ok", range(12))
    assert mgr.allocate_slots(ok, 12) == [1, 2, 3]
    assert pool.free_queue() == []
    # Now even a 1-token request does not fit until ok is freed.
    tiny = make_request("tiny", [9])
    assert mgr.allocate_slots(tiny, 1) is None
    mgr.free(tiny)
    mgr.free(ok)
    assert pool.free_queue() == [3, 2, 1]
    assert mgr.allocate_slots(tiny, 1) == [3]
    assert pool.num_evicted == 1


def test_held_hit_blocks_do_not_count_against_the_supply() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=5, block_size=4))
    pool = mgr.pool
    # A holds [1, 2, 3]; only block 4 is free.
    a = make_request("A", range(12))
    run_once(mgr, a)
    assert pool.free_queue() == [4]
    # B hits A's 3 held blocks and needs 1 new block: 1 + 0 evictable <= 1 free.
    b = make_request("B", [*range(12), 99])
    assert run_once(mgr, b) == ([1, 2, 3], 12, [4])
    assert refs(mgr) == [1, 2, 2, 2, 1]
    assert pool.free_queue() == []


# ------------------------------------------------------------------ no deduplication
def test_repeat_of_64_token_prompt_caches_its_last_block_twice() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=16))
    pool = mgr.pool
    prompt = list(range(64))
    # Step 1: the first run caches 4 blocks [1, 2, 3, 4].
    r1 = make_request("r1", prompt, block_size=16)
    assert run_once(mgr, r1) == ([], 0, [1, 2, 3, 4])
    h3 = r1.block_keys[3]
    mgr.free(r1)
    assert pool.free_queue() == [5, 6, 7, 8, 9, 4, 3, 2, 1]
    # Step 2: the repeat hits 3 blocks (n - 1 cap) and recomputes the 4th into
    # a new block 5, which gets the same hash: h3 -> {4, 5}.
    r2 = make_request("r2", prompt, block_size=16)
    assert run_once(mgr, r2) == ([1, 2, 3], 48, [5])
    assert pool.block_hash[4] == pool.block_hash[5] == h3
    assert pool.get_cached_block(h3) == 4  # lookup returns the older
    assert pool.cached_hashes() == 4
    assert pool.free_queue() == [6, 7, 8, 9, 4]
    mgr.free(r2)
    assert pool.free_queue() == [6, 7, 8, 9, 4, 5, 3, 2, 1]
    # Step 3: a 65-token prompt hits all 4 blocks, through the older copy 4.
    longer = make_request("r3", [*prompt, 1000], block_size=16)
    assert mgr.get_computed_blocks(longer) == ([1, 2, 3, 4], 64)
    # Step 4: popping 6..9 and then 4 evicts only block 4's copy; 5 keeps the hash.
    other = make_request("x", [2000 + i for i in range(72)], block_size=16)
    assert run_once(mgr, other)[2] == [6, 7, 8, 9, 4]
    assert pool.num_evicted == 1
    assert pool.block_hash[5] == h3 and pool.block_hash[4] is None
    assert pool.get_cached_block(h3) == 5
    assert mgr.get_computed_blocks(longer) == ([1, 2, 3, 5], 64)


# ------------------------------------------------------------------ decode
@pytest.mark.parametrize(("n_out", "next_hit"), [(25, 64), (24, 48)])
def test_decoded_blocks_are_cached_for_the_next_turn(n_out: int, next_hit: int) -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=16))
    pool = mgr.pool
    prompt = [(3 * i) % 97 for i in range(40)]
    output = [500 + i for i in range(n_out)]
    # Turn 1: KV exists for 40 + n_out - 1 tokens (the last sample is never computed).
    t1 = make_request("t1", prompt, output, block_size=16)
    assert t1.num_kv_tokens == 40 + n_out - 1
    assert run_once(mgr, t1)[2] == [1, 2, 3, 4, 5][: -(-t1.num_kv_tokens // 16)]
    assert pool.cached_hashes() == next_hit // 16
    if n_out == 24:
        # 64 tokens have a 4th block key, but only 63 have KV: block 4 stays unhashed.
        assert len(t1.block_keys) == 4
        assert pool.block_hash[4] is None
    mgr.free(t1)
    # Turn 2: the previous prompt + output + new text.
    t2 = make_request("t2", [*prompt, *output, 7, 8, 9], block_size=16)
    hits, n_hit = mgr.get_computed_blocks(t2)
    assert n_hit == next_hit
    assert hits == list(range(1, next_hit // 16 + 1))


def test_decode_one_token_at_a_time_hashes_blocks_as_they_fill() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool

    def step(req: Request, n: int) -> list[int] | None:
        # The scheduler's part: allocate, then count the scheduled tokens as computed.
        new = mgr.allocate_slots(req, n)
        req.num_computed_tokens += n
        return new

    # Prompt of 6, 6 outputs: 12 tokens, 3 block keys, but KV for only 11 tokens
    # (the last sampled token is never computed), so only 2 blocks may be cached.
    req = make_request("d", range(6), [100 + i for i in range(6)])
    assert (len(req.block_keys), req.num_kv_tokens) == (3, 11)
    assert step(req, 6) == [1, 2]
    assert pool.block_hash[1:3] == [req.block_keys[0], None]
    # Token 7: still inside block 2.
    assert step(req, 1) == []
    assert pool.block_hash[2] is None
    # Token 8 fills block 2, which is hashed now.
    assert step(req, 1) == []
    assert pool.block_hash[2] == req.block_keys[1]
    # Token 9 needs block 3.
    assert step(req, 1) == [3]
    assert pool.free_queue() == [4, 5, 6, 7, 8, 9]
    assert step(req, 1) == []
    assert step(req, 1) == []
    assert req.num_computed_tokens == 11
    assert pool.block_hash[3] is None
    # A slot for token 12 completes block 3 on paper, but it has no KV: not cached.
    assert step(req, 1) == []
    assert pool.block_hash[3] is None
    assert step(req, 1) == [4]
    assert pool.block_hash[4] is None
    assert pool.cached_hashes() == 2
    assert mgr.req_to_blocks["d"] == [1, 2, 3, 4]
    # Free tail first: the unhashed 4, 3 go to the head as a group, 2, 1 to the tail.
    mgr.free(req)
    assert pool.free_queue() == [4, 3, 5, 6, 7, 8, 9, 2, 1]


# ------------------------------------------------------------------ eviction counter
def test_eviction_counter_counts_popped_hashed_blocks() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=4, block_size=4))
    pool = mgr.pool
    # Three 8-token prompts (2 full blocks each) through 3 usable blocks.
    counts = []
    for i in range(3):
        r = make_request(str(i), [10 * i + t for t in range(8)])
        run_once(mgr, r)
        mgr.free(r)
        counts.append(pool.num_evicted)
    # r0 takes fresh [1, 2]; r1 takes fresh 3 and r0's deeper block 2 (1 eviction);
    # r2 takes r0's block 1 and r1's deeper block 2 (2 more). Every pop of a hashed
    # block counts once; fresh ones do not.
    assert counts == [0, 1, 3]
    assert pool.free_queue() == [3, 2, 1]
    assert pool.cached_hashes() == 3


# ------------------------------------------------------------------ caching off
def test_enable_caching_false_never_hits_or_hashes() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4, enable_caching=False))
    pool = mgr.pool
    for i in range(4):
        req = make_request(str(i), range(13))
        hits, n_hit, new = run_once(mgr, req)
        assert (hits, n_hit) == ([], 0)
        assert new is not None and len(new) == 4
        mgr.free(req)
        assert pool.cached == {}
        assert all(h is None for h in pool.block_hash)
        assert pool.num_evicted == 0
        assert sorted(pool.free_queue()) == list(range(1, 10))


# ------------------------------------------------------------------ reset
def test_reset_prefix_cache_needs_every_block_free() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    pool = mgr.pool
    a = make_request("a", range(9))
    run_once(mgr, a)
    # Held: refused, and the cache still answers.
    assert pool.reset_prefix_cache() is False
    assert mgr.get_computed_blocks(make_request("x", range(9))) == ([1, 2], 8)
    mgr.free(a)
    assert pool.reset_prefix_cache() is True
    assert mgr.get_computed_blocks(make_request("y", range(9))) == ([], 0)
    assert pool.cached == {}


# ------------------------------------------------------------------ sequential replay
# Replay behaviour is checked on both implementations (the ``implementation``
# fixture in conftest.py: the pure-Python manager and the C accelerator) through
# the replayer's public view: free_queue(), cached and stats.
def test_replayer_rejects_a_request_that_cannot_fit_an_empty_pool(implementation: str) -> None:
    cfg = CacheConfig(num_blocks=4, block_size=4)  # 3 usable blocks = 12 tokens of KV
    replayer = SequentialReplayer(cfg, implementation=implementation)
    assert replayer.implementation == implementation
    reqs = [
        make_request("fits", range(12), [50]),  # KV 12: fits exactly
        make_request("too-long", range(13)),  # KV 13: 4 blocks
        make_request("too-long-decode", range(12), [50, 51]),  # KV 13 via decode
        make_request("repeat", range(12), [60]),
    ]
    seen = []
    for res in replayer.run(reqs):
        seen.append((res.request_id, replayer.free_queue(), dict(replayer.cached), replayer.stats.evicted_blocks))
    k0, k1, k2 = reqs[0].block_keys
    assert seen == [
        # fits: [1, 2, 3], all hashed, freed tail first.
        ("fits", [3, 2, 1], {k0: 1, k1: 2, k2: 3}, 0),
        # The rejections change nothing: same queue, same map, no eviction.
        ("too-long", [3, 2, 1], {k0: 1, k1: 2, k2: 3}, 0),
        ("too-long-decode", [3, 2, 1], {k0: 1, k1: 2, k2: 3}, 0),
        # repeat: hits [1, 2] (n - 1 cap), pops 3 past them (evicting k2) and caches k2 in it again.
        ("repeat", [3, 2, 1], {k0: 1, k1: 2, k2: 3}, 1),
    ]
    results = list(SequentialReplayer(cfg, implementation=implementation).run(reqs))
    assert [r.rejected for r in results] == [False, True, True, False]
    rej = results[1]
    assert (rej.cached_tokens, rej.hit_blocks, rej.blocks, rej.first_miss_block) == (0, 0, 3, 0)
    assert results[2].cached_tokens == 0 and results[2].hit_blocks == 0
    # The rejections left the cache alone: the repeat hits 2 blocks (n - 1 cap).
    assert (results[3].cached_tokens, results[3].hit_blocks, results[3].first_miss_block) == (8, 2, 2)
    assert replayer.stats.rejected_requests == 2


def test_python_replayer_leaves_no_request_or_reference_behind() -> None:
    # The pure-Python replayer drives a KVCacheManager: after each request (run,
    # or rejected) no request is registered and every block is back at ref_cnt 0.
    replayer = SequentialReplayer(CacheConfig(num_blocks=4, block_size=4), implementation="python")
    assert replayer.seq_cache is None
    mgr = replayer.manager
    assert mgr is not None
    reqs = [make_request("fits", range(12), [50]), make_request("too-long", range(13)), make_request("repeat", range(9))]
    for res in replayer.run(reqs):
        assert mgr.req_to_blocks == {} and mgr.num_cached_blocks == {}, res.request_id
        assert refs(mgr) == [1, 0, 0, 0], res.request_id
    assert mgr.pool.free_queue() == replayer.free_queue() == [3, 2, 1]
    assert mgr.pool.cached is replayer.cached


@pytest.mark.skipif(
    os.environ.get("KVCACHE_PURE_PYTHON", "") not in ("", "0"), reason="KVCACHE_PURE_PYTHON disables the C path"
)
def test_c_replayer_exposes_its_seq_cache() -> None:
    replayer = SequentialReplayer(CacheConfig(num_blocks=4, block_size=4), implementation="c")
    assert replayer.implementation == "c"
    assert replayer.manager is None and replayer.seq_cache is not None
    list(replayer.run([make_request("a", range(9))]))
    assert replayer.cached is replayer.seq_cache.cached
    assert replayer.free_queue() == replayer.seq_cache.free_queue() == [3, 2, 1]


@pytest.mark.parametrize(
    ("free_order", "queues", "evictions"),
    [
        ("current", [[4, 5, 3, 2, 1], [3, 2, 1, 5, 4], [5, 4, 3, 2, 1], [4, 3, 5, 2, 1]], [0, 0, 2, 2]),
        ("classic", [[4, 5, 3, 2, 1], [3, 2, 1, 5, 4], [4, 5, 3, 2, 1], [5, 3, 4, 2, 1]], [0, 0, 2, 3]),
    ],
)
def test_replayer_step_by_step(
    free_order: str, queues: list[list[int]], evictions: list[int], implementation: str
) -> None:
    replayer = SequentialReplayer(
        CacheConfig(num_blocks=6, block_size=4, free_order=free_order), implementation=implementation
    )
    reqs = [
        # R1: |0..3|4..7|8..11| + 1 output: KV 12 -> blocks [1, 2, 3], all hashed.
        make_request("R1", range(12), [99]),
        # R2: 8 new tokens: pops the fresh 4, 5 and caches them.
        make_request("R2", range(50, 58), [99]),
        # R3: shares R1's first 8 tokens: hits [1, 2], which sit in the queue; the
        # 2 new blocks are popped past them (3 then 5: 2 evictions). Block 5 holds
        # the partial |70|.
        make_request("R3", [*range(8), 60, 61, 62, 63, 70], [99]),
        # R4: R1 again: hits [1, 2] (n - 1 cap) and recomputes |8..11| in a new block.
        make_request("R4", range(12), [99]),
    ]
    seen = []
    for res in replayer.run(reqs):
        seen.append((res.request_id, res.cached_tokens, replayer.free_queue(), replayer.stats.evicted_blocks))
    assert seen == [
        ("R1", 0, queues[0], evictions[0]),
        ("R2", 0, queues[1], evictions[1]),
        ("R3", 8, queues[2], evictions[2]),
        ("R4", 8, queues[3], evictions[3]),
    ]
    assert replayer.stats.evicted_blocks == evictions[-1]
    # R1's first two blocks survived everything: they were hits, never evicted.
    assert replayer.cached[reqs[0].block_keys[0]] == 1
    assert replayer.cached[reqs[0].block_keys[1]] == 2


def unkeyed_decode_request() -> Request:
    # As in a hash-id trace: only the 2 prompt blocks have keys; 9 outputs make
    # KV for 16 tokens, so blocks 3 and 4 are computed but never cached.
    req = make_request("h", range(8), [100 + i for i in range(9)])
    req.block_keys = req.block_keys[:2]
    return req


def test_unkeyed_decode_blocks_go_to_the_head_deepest_first() -> None:
    mgr = KVCacheManager(CacheConfig(num_blocks=10, block_size=4))
    req = unkeyed_decode_request()
    assert run_once(mgr, req) == ([], 0, [1, 2, 3, 4])
    mgr.free(req)
    # Freed tail first (4, 3, 2, 1): the unhashed 4, 3 form one group at the head
    # in that order; the hashed 2, 1 go to the tail.
    assert mgr.pool.free_queue() == [4, 3, 5, 6, 7, 8, 9, 2, 1]
    assert mgr.pool.block_hash[1:5] == [req.block_keys[0], req.block_keys[1], None, None]


def test_replayer_unkeyed_decode_blocks_go_to_the_head_deepest_first(implementation: str) -> None:
    replayer = SequentialReplayer(CacheConfig(num_blocks=10, block_size=4), implementation=implementation)
    req = unkeyed_decode_request()
    assert [r.cached_tokens for r in replayer.run([req])] == [0]
    # The same as KVCacheManager's step by step (the test above).
    assert replayer.free_queue() == [4, 3, 5, 6, 7, 8, 9, 2, 1]
    assert replayer.cached == {req.block_keys[0]: 1, req.block_keys[1]: 2}


def test_replayer_fully_hit_request_allocates_nothing(implementation: str) -> None:
    # Hit cap = the whole prompt, as for hash-id traces (--hit-cap none): a repeat
    # with at most one output token hits every block it needs and pops none.
    replayer = SequentialReplayer(CacheConfig(num_blocks=6, block_size=4), implementation=implementation)

    def req(rid: str, prompt: Sequence[int], output: Sequence[int] = ()) -> Request:
        r = make_request(rid, prompt, output)
        r.block_keys = r.block_keys[: len(prompt) // 4]  # decode blocks carry no key
        r.hit_cap_tokens = len(prompt)
        return r

    reqs = [
        # R0: |0..3| + 9 outputs: KV 12 -> [1 keyed, 2, 3 unkeyed]; 3, 2 go to the head.
        req("R0", range(4), range(100, 109)),
        # R1: the same prompt, no output: KV 4 -> hits [1], needs no new block.
        req("R1", range(4)),
        # R2: an unrelated prompt + 5 outputs: KV 8 pops the head group 3, 2.
        req("R2", range(50, 54), range(200, 205)),
    ]
    seen = []
    for res in replayer.run(reqs):
        seen.append((res.request_id, res.cached_tokens, res.first_miss_block, replayer.free_queue()))
    assert seen == [
        ("R0", 0, 0, [3, 2, 4, 5, 1]),
        ("R1", 4, None, [3, 2, 4, 5, 1]),
        # 3 takes R2's keyed block (to the tail), 2 its unkeyed one (back to the head).
        ("R2", 0, 0, [2, 4, 5, 1, 3]),
    ]
    assert replayer.cached == {reqs[0].block_keys[0]: 1, reqs[2].block_keys[0]: 3}


def test_replayer_results(implementation: str) -> None:
    cfg = CacheConfig(num_blocks=None, block_size=16)
    replayer = SequentialReplayer(cfg, implementation=implementation)
    reqs = [
        make_request("a", range(64), block_size=16),
        make_request("b", range(64), block_size=16),
        make_request("c", [*range(64), 1], block_size=16),
        make_request("d", [*range(20), 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7], block_size=16),
        make_request("e", range(5), block_size=16),
    ]
    got = [(r.request_id, r.cached_tokens, r.hit_blocks, r.blocks, r.first_miss_block) for r in replayer.run(reqs)]
    assert got == [
        ("a", 0, 0, 4, 0),
        ("b", 48, 3, 4, 3),
        ("c", 64, 4, 4, None),
        ("d", 16, 1, 2, 1),
        ("e", 0, 0, 0, None),
    ]
    assert replayer.stats.evicted_blocks == 0
    assert replayer.stats.rejected_requests == 0
    # Unbounded, so the listed queue holds only blocks used so far: the unhashed
    # head group, then the LRU tail.
    # a: fresh [1, 2, 3, 4], all hashed       -> [4, 3, 2, 1]
    # b: hits [1, 2, 3], recomputes its 4th block into fresh 5 (a duplicate of 4)
    #                                         -> [4, 5, 3, 2, 1]
    # c: hits [1, 2, 3, 4] (the older copy), fresh 6 holds the partial token
    #                                         -> [6, 5, 4, 3, 2, 1]
    # d: hits [1], pops 6 from the head (now hashed, to the tail) and fresh 7 (partial)
    #                                         -> [7, 5, 4, 3, 2, 6, 1]
    # e: one partial block: pops 7 from the head and puts it back there.
    assert replayer.free_queue() == [7, 5, 4, 3, 2, 6, 1]
    k = reqs[0].block_keys
    assert replayer.cached == {k[0]: 1, k[1]: 2, k[2]: 3, k[3]: 4, reqs[3].block_keys[1]: 6}
    assert replayer.stats.peak_cached_blocks == 5


def test_replayer_stats_track_the_peak_of_cached_blocks(implementation: str) -> None:
    # 3 usable blocks. A caches 3 blocks; B (2 tokens) then pops one of them for its
    # partial block and caches nothing, so the cache shrinks from 3 to 2 hashes.
    replayer = SequentialReplayer(CacheConfig(num_blocks=4, block_size=4), implementation=implementation)
    sizes = []
    for _ in replayer.run([make_request("A", range(12), [99]), make_request("B", [50, 51])]):
        sizes.append(len(replayer.cached))
    assert sizes == [3, 2]
    assert replayer.stats.evicted_blocks == 1
    # "peak" must be the largest number seen while replaying, not the final one.
    assert replayer.stats.peak_cached_blocks == 3


def test_replayer_rejects_unknown_implementation() -> None:
    with pytest.raises(ValueError):
        SequentialReplayer(CacheConfig(), implementation="rust")


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_size": 0},
        {"block_size": -16},
        {"block_size": 1.5},
        {"block_size": "16"},
        {"num_blocks": 1},
        {"num_blocks": 0},
        {"num_blocks": -3},
        {"num_blocks": 2.0},
        {"hash_algo": "md5"},
        {"hash_algo": "xxhash"},
        {"free_order": "lru"},
    ],
)
def test_cache_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        CacheConfig(**kwargs)


def test_config_error_is_a_value_error_and_a_kvcache_error() -> None:
    with pytest.raises(ValueError):
        CacheConfig(block_size=0)
    assert issubclass(ConfigError, KVCacheError)


def test_cache_config_defaults_and_usable_blocks() -> None:
    cfg = CacheConfig()
    assert (cfg.block_size, cfg.num_blocks, cfg.hash_algo, cfg.free_order, cfg.enable_caching) == (
        16, None, "xxh3_128", "current", True,
    )
    assert cfg.usable_blocks is None
    assert CacheConfig(num_blocks=2).usable_blocks == 1
    assert CacheConfig(num_blocks=10).usable_blocks == 9
